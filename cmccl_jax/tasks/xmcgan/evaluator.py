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
from cmccl_jax.evaluation.generation import r_precision
from cmccl_jax.summaries import image_grid
from cmccl_jax.tasks.base import Evaluator
from cmccl_jax.tasks.xmcgan.step import to_encoder_input
from cmccl_jax.errors import UserError


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
    raise UserError(f"the {split!r} split has {len(images)} images but config.gan.eval.num_images={count}; "
                     f"lower it to at most {len(images)}.")
  return images, tokens


# The samples shown in TensorBoard: the first evaluation captions, fixed noise.
GRID_SIZE = 16


def to_uint8(images) -> np.ndarray:
  """[-1, 1] floats → uint8 pixels."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def generator_vars(state, ema: bool) -> dict:
  """G's variables for sampling: the EMA weights (or the raw ones) with G's running statistics."""
  return {"params": state.ema_params if ema else state.g_params, "batch_stats": state.g_stats}


class GenerationEvaluator(Evaluator):
  """Generates from a split's captions with G and with EMA-G and scores both; see the module docstring.

  Scores are `g/<metric>` and `ema/<metric>`. `model` is the task's `XmcganModel`
  (generator, frozen encoder, sampler, mesh).
  """

  def __init__(self, builder, split: str, tokenizer, model, batch_size: int, num_images: int, z_dim: int,
               candidates: int = 100, inception=None, stats_dir: str | None = None, seed: int = 0):
    self.model = model
    self.mesh = model.mesh
    self.batch_size = batch_size
    self.tokenizer = tokenizer
    parallel.local_batch_size(batch_size, self.mesh, "config.eval_batch_size")
    image_size = model.image_shape[0]
    self.real, self.tokens = _first_captions(builder, split, tokenizer, batch_size, image_size, num_images)
    rng = np.random.default_rng(seed)
    self.z = rng.standard_normal((num_images, z_dim)).astype(np.float32)
    if candidates > num_images:
      raise UserError(f"config.gan.eval.candidates={candidates} exceeds config.gan.eval.num_images={num_images}.")
    # Row i: caption i, then candidates − 1 other captions with a different text (the
    # synthetic set repeats captions; a copy of the true caption is not a wrong answer).
    text_id = np.unique(self.tokens, axis=0, return_inverse=True)[1].reshape(-1)
    others = []
    for i in range(num_images):
      pool = np.nonzero(text_id != text_id[i])[0]
      if len(pool) < candidates - 1:
        raise UserError(f"only {len(pool)} evaluation captions differ from caption {i}; lower "
                        f"config.gan.eval.candidates={candidates} or raise config.gan.eval.num_images.")
      others.append(rng.choice(pool, candidates - 1, replace=False))
    others = np.stack(others)
    self.candidates = np.concatenate([np.arange(num_images)[:, None], others], axis=1)
    encoder = model.encoder
    to_input = functools.partial(to_encoder_input, size=model.encoder_size)
    jit = functools.partial(jax.jit, out_shardings=parallel.replicated(self.mesh))
    self._features = jit(lambda p, x: encoder.apply(p, to_input(x), method=encoder.image_features))
    self._image_emb = jit(lambda p, x: losses.l2_normalize(encoder.apply(p, to_input(x), method=encoder.encode_image)))
    self._text_emb = jit(lambda p, t: losses.l2_normalize(encoder.apply(p, t, method=encoder.encode_text)))
    self.inception = inception
    self._inception_stats_path = None
    if inception is not None:
      name = f"fid_stats_{builder.name}_{builder.info.config_name or 'default'}_{split}_{num_images}.npz"
      self._inception_stats_path = os.path.join(stats_dir or builder.data_dir, name)

  def _batched(self, fn, *rows: np.ndarray, args=()):
    return parallel.batched_apply(fn, self.mesh, self.batch_size, rows, args=args)

  def generate(self, g_vars, encoder_vars, tokens=None, z=None) -> np.ndarray:
    """Float [n, S, S, 3] samples in [-1, 1] (by default for the evaluation captions and noise)."""
    tokens = self.tokens if tokens is None else tokens
    z = self.z if z is None else z
    return self._batched(self.model.sampler, tokens, z, args=(g_vars, encoder_vars))

  def real_inception_statistics(self):
    """(mu, sigma) of the real images' pool_3 features, computed once per dataset/split/count and cached."""
    path = self._inception_stats_path
    if os.path.isfile(path):
      return fid.load_statistics(path)
    pool, _ = self._inception(self.real.astype(np.float32) / 127.5 - 1.0)
    mu, sigma = fid.activation_statistics(pool)
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      fid.save_statistics(path, mu, sigma)
    return mu, sigma

  def _inception(self, images: np.ndarray):
    out = self._batched(self.inception, images)
    return out["pool"].astype(np.float64), out["logits"].astype(np.float64)

  def scores(self, g_vars, encoder_vars) -> dict[str, float]:
    """The metrics of one generator's variables."""
    fake = self.generate(g_vars, encoder_vars)
    real = self.real.astype(np.float32) / 127.5 - 1.0
    feats = lambda x: self._batched(self._features, x, args=(encoder_vars,)).astype(np.float64)
    scores = {"fd_stage1": float(fid.frechet_distance(*fid.activation_statistics(feats(real)),
                                                      *fid.activation_statistics(feats(fake))))}
    text = self._batched(self._text_emb, self.tokens, args=(encoder_vars,))
    for name, images in (("", fake), ("_real", real)):
      emb = self._batched(self._image_emb, images, args=(encoder_vars,))
      scores[f"alignment/cosine{name}"] = float(np.mean(np.sum(emb * text, axis=1)))
      scores[f"alignment/r_precision{name}"] = 100 * r_precision(emb, text, self.candidates)
    scores["chance/r_precision"] = 100 / self.candidates.shape[1]
    if self.inception is not None:
      pool, logits = self._inception(fake)
      scores["fid"] = float(fid.frechet_distance(*fid.activation_statistics(pool), *self.real_inception_statistics()))
      scores["is"], scores["is_std"] = map(float, fid.inception_score(logits, splits=10))
    return scores

  def __call__(self, state) -> dict[str, float]:
    scores = {}
    for name, ema in (("g", False), ("ema", True)):
      scores.update({f"{name}/{k}": v for k, v in self.scores(generator_vars(state, ema), state.encoder).items()})
    return scores

  def summary(self, scores: dict[str, float]) -> str:
    line = " | ".join(f"{n} FD(stage-1) {scores[f'{n}/fd_stage1']:.2f} "
                      f"R-prec {scores[f'{n}/alignment/r_precision']:.1f}%" for n in ("g", "ema"))
    line += (f" | real R-prec {scores['g/alignment/r_precision_real']:.1f}% "
             f"(chance {scores['g/chance/r_precision']:.0f}%)")
    if "ema/fid" in scores:
      line += f" | EMA FID {scores['ema/fid']:.2f} IS {scores['ema/is']:.2f}"
    return line

  def write_summaries(self, writer, step: int, state, *, first: bool) -> None:
    """Image grids of G and EMA-G samples for the fixed grid captions (and, the first time, the real images)."""
    tokens, z = self.tokens[:GRID_SIZE], self.z[:GRID_SIZE]
    images = {f"samples/{name}": to_uint8(self.generate(generator_vars(state, ema), state.encoder, tokens, z))
              for name, ema in (("g", False), ("ema", True))}
    if jax.process_index() > 0:
      return
    if first:
      images["samples/real"] = self.real[:GRID_SIZE]
      captions = self.tokenizer.decode(tokens)
      writer.write_texts(step, {"samples/captions": "\n\n".join(f"{i}: `{c}`" for i, c in enumerate(captions))})
    writer.write_images(step, {k: image_grid(v)[None] for k, v in images.items()})
