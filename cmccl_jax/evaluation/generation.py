"""Evaluation of a text-to-image generator on a split's captions.

For the first `num_images` images of the split, one image is generated from each
image's first caption (fixed noise, so checkpoints are compared on equal terms).
Always reported, with no external weights:
  fd_stage1        Fréchet distance between real and generated images in the stage-1
                   image tower's feature space. It is *not* FID: only comparable between
                   runs that share the stage-1 experiment.
  alignment/cosine mean cosine of each generated image with its caption under the
                   stage-1 dual encoder (alignment/cosine_real: the same for the real images).
  alignment/r_precision  AttnGAN's R-precision: how often the true caption ranks first
                   among `candidates` (it and candidates − 1 other captions of the split)
                   for the generated image; chance is 100 / candidates %.
With `inception` (a Flax FID InceptionV3 and its weights), also
  fid              FID on the 2048-d pool_3 features against the split's real statistics,
                   cached in `stats_dir` per dataset, split and count;
  is, is_std       Inception Score, 10 splits.
"""

import functools
import os

import jax
import numpy as np

from cmccl_jax import losses, parallel
from cmccl_jax.data import pipeline
from cmccl_jax.evaluation import fid
from cmccl_jax.train.gan_step import to_encoder_input


def _first_captions(builder, split: str, tokenizer, batch_size: int, image_size: int, count: int):
  """(images uint8 [n, S, S, 3], tokens [n, L]) of the split's first `count` images and their first captions."""
  images, tokens = [], []
  for batch in pipeline.eval_examples(builder, split, tokenizer, batch_size, image_size):
    images.append(batch["image"])
    tokens.append(batch["tokens"][:, 0])
    if sum(len(x) for x in images) >= count:
      break
  images, tokens = np.concatenate(images)[:count], np.concatenate(tokens)[:count]
  if len(images) < count:
    raise ValueError(f"the {split!r} split has {len(images)} images but config.gan.eval.num_images={count}; "
                     f"lower it to at most {len(images)}.")
  return images, tokens


class GenerationEvaluator:
  """Generates from a split's captions and scores the samples; see the module docstring."""

  def __init__(self, builder, split: str, tokenizer, setup, batch_size: int, num_images: int,
               candidates: int = 100, inception=None, stats_dir: str | None = None, seed: int = 0):
    self.setup = setup
    self.mesh = setup.mesh
    self.batch_size = batch_size
    parallel.local_batch_size(batch_size, self.mesh)
    image_size = setup.image_shape[0]
    self.real, self.tokens = _first_captions(builder, split, tokenizer, batch_size, image_size, num_images)
    rng = np.random.default_rng(seed)
    self.z = rng.standard_normal((num_images, int(setup.config.gan.z_dim))).astype(np.float32)
    if candidates > num_images:
      raise ValueError(f"config.gan.eval.candidates={candidates} exceeds config.gan.eval.num_images={num_images}.")
    # Row i: caption i, then candidates − 1 other captions with a different text (the
    # synthetic set repeats captions; a copy of the true caption is not a wrong answer).
    text_id = np.unique(self.tokens, axis=0, return_inverse=True)[1].reshape(-1)
    others = []
    for i in range(num_images):
      pool = np.nonzero(text_id != text_id[i])[0]
      if len(pool) < candidates - 1:
        raise ValueError(f"only {len(pool)} evaluation captions differ from caption {i}; lower "
                         f"config.gan.eval.candidates={candidates} or raise config.gan.eval.num_images.")
      others.append(rng.choice(pool, candidates - 1, replace=False))
    others = np.stack(others)
    self.candidates = np.concatenate([np.arange(num_images)[:, None], others], axis=1)
    self._sample = setup.sampler
    model = setup.encoder
    to_input = functools.partial(to_encoder_input, size=setup.encoder_size)
    self._features = jax.jit(lambda p, x: model.apply(p, to_input(x), method=model.image_features))
    self._image_emb = jax.jit(lambda p, x: losses.l2_normalize(model.apply(p, to_input(x), method=model.encode_image)))
    self._text_emb = jax.jit(lambda p, t: losses.l2_normalize(model.apply(p, t, method=model.encode_text)))
    self.inception = inception
    self._inception_stats_path = None
    if inception is not None:
      name = f"fid_stats_{builder.name}_{builder.info.config_name or 'default'}_{split}_{num_images}.npz"
      self._inception_stats_path = os.path.join(stats_dir or builder.data_dir, name)

  def _batched(self, fn, rows: np.ndarray, *extra) -> np.ndarray:
    out = []
    for start in range(0, rows.shape[0], self.batch_size):
      chunk = rows[start:start + self.batch_size]
      padded = [pipeline.pad_rows(x[start:start + self.batch_size], self.batch_size) for x in extra]
      result = fn(pipeline.pad_rows(chunk, self.batch_size), *padded)
      out.append(jax.tree.map(lambda r: np.asarray(r)[:len(chunk)], result))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *out)

  def generate(self, g_vars, encoder_vars) -> np.ndarray:
    """Float [n, S, S, 3] samples in [-1, 1] for the evaluation captions."""
    return self._batched(lambda t, z: self._sample(g_vars, encoder_vars, t, z), self.tokens, self.z)

  def real_inception_statistics(self):
    """(mu, sigma) of the real images' pool_3 features, computed once per dataset/split/count and cached."""
    path = self._inception_stats_path
    if os.path.isfile(path):
      return fid.load_statistics(path)
    pool, _ = self._inception(self.real.astype(np.float32) / 127.5 - 1.0)
    mu, sigma = fid.activation_statistics(pool)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fid.save_statistics(path, mu, sigma)
    return mu, sigma

  def _inception(self, images: np.ndarray):
    out = self._batched(lambda x: self.inception(x), images)
    return out["pool"].astype(np.float64), out["logits"].astype(np.float64)

  def __call__(self, g_vars, encoder_vars) -> dict[str, float]:
    fake = self.generate(g_vars, encoder_vars)
    real = self.real.astype(np.float32) / 127.5 - 1.0
    feats = functools.partial(self._batched, lambda x: self._features(encoder_vars, x))
    scores = {"fd_stage1": float(fid.frechet_distance(*fid.activation_statistics(feats(real).astype(np.float64)),
                                                      *fid.activation_statistics(feats(fake).astype(np.float64))))}
    text = self._batched(lambda t: self._text_emb(encoder_vars, t), self.tokens)
    for name, images in (("", fake), ("_real", real)):
      emb = self._batched(lambda x: self._image_emb(encoder_vars, x), images)
      scores[f"alignment/cosine{name}"] = float(np.mean(np.sum(emb * text, axis=1)))
      scores[f"alignment/r_precision{name}"] = 100 * r_precision(emb, text, self.candidates)
    scores["chance/r_precision"] = 100 / self.candidates.shape[1]
    if self.inception is not None:
      pool, logits = self._inception(fake)
      scores["fid"] = float(fid.frechet_distance(*fid.activation_statistics(pool), *self.real_inception_statistics()))
      scores["is"], scores["is_std"] = map(float, fid.inception_score(logits, splits=10))
    return scores


def r_precision(image_emb: np.ndarray, text_emb: np.ndarray, candidates: np.ndarray) -> float:
  """Fraction of images whose own caption (column 0 of `candidates`) beats every other candidate's cosine.

  A tie counts against the model, as in retrieval: a generator that maps every caption to one
  image would otherwise score 100%.
  """
  sims = np.einsum("nd,ncd->nc", image_emb, text_emb[candidates])
  return float(np.mean(sims[:, 0] > np.max(sims[:, 1:], axis=1)))
