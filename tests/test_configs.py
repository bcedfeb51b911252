"""Every shipped config validates and describes a model that builds (abstractly, so sizes cost nothing)."""

import glob
import importlib
import os

import jax
import pytest

from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax import parallel, tasks
from cmccl_jax.tasks.dual_encoder.trained import TrainedDualEncoder
from cmccl_jax.data.tokenizer import build_tokenizer, load_vocab
from cmccl_jax.tasks.xmcgan.task import XmcganModel
from cmccl_jax.tasks.dual_encoder.task import DualEncoderModel
from cmccl_jax.errors import UserError

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(os.path.dirname(__file__), "..",
                                                                            "configs", "[a-z]*.py"))
                 if not p.endswith("common.py"))  # the shared blocks, not a config


def _param_count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def _abstract_stage1(config, workdir) -> TrainedDualEncoder:
  """A stage-1 experiment of `config` with shapes for weights: enough to build a GAN on it abstractly."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())
  size = config.data.image_size or config.data.synthetic.image_size
  tokenizer = build_tokenizer(config.tokenizer)
  setup = DualEncoderModel(config, parallel.make_mesh({"data": 1}, jax.devices()[:1]), (size, size, 3), tokenizer.vocab_size)
  return TrainedDualEncoder(workdir=str(workdir), step=0, config=config, model=setup.model,
                            params=setup.abstract_state.params, tokenizer=tokenizer, image_size=size)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_builds(name, tmp_path):
  config = importlib.import_module(f"configs.{name}").get_config()
  size = config.data.image_size or config.data.synthetic.image_size
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  if config.model_type == "xmcgan":  # its stage 1: the dual-encoder config it is documented with
    stage1_name = {"xmcgan_synthetic": "default", "xmcgan_coco": "coco_vitb16_bert"}[name]
    stage1 = _abstract_stage1(importlib.import_module(f"configs.{stage1_name}").get_config(), tmp_path / "stage1")
    config.gan.stage1 = stage1.workdir
    tasks.validate(config)
    setup = XmcganModel(config.gan, Curriculum.from_config(config.curriculum, int(config.num_steps)), mesh, config.param_sharding, (size, size, 3), stage1)
    assert _param_count(setup.abstract_state.g_params) > 0 and _param_count(setup.abstract_state.d_params) > 0
    return
  tasks.validate(config)
  setup = DualEncoderModel(config, mesh, (size, size, 3), len(load_vocab(config.tokenizer.vocab)))
  assert _param_count(setup.abstract_state.params) > 0


def test_gan_config_without_a_stage1_experiment_says_how_to_make_one(tmp_path):
  config = importlib.import_module("configs.xmcgan_synthetic").get_config()
  config.gan.stage1 = str(tmp_path / "missing")
  with pytest.raises(UserError, match=r"not a trained dual-encoder experiment.*bash train.sh demo"):
    tasks.validate(config)


def test_coco_config_has_vit_b16_and_bert_base_sizes():
  config = importlib.import_module("configs.coco_vitb16_bert").get_config()
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  setup = DualEncoderModel(config, mesh, (224, 224, 3), len(load_vocab(config.tokenizer.vocab)))
  params = setup.abstract_state.params["params"]
  # ViT-B/16 at 224 px without its classifier: 85.8M; BERT-base without pooler: 108.9M.
  assert _param_count(params["image_tower"]) == pytest.approx(85.8e6, rel=0.01)
  assert _param_count(params["text_tower"]) == pytest.approx(108.9e6, rel=0.01)


@pytest.mark.parametrize("name", ["xmcgan_synthetic", "xmcgan_coco"])
def test_a_gan_config_carries_no_dual_encoder_fields(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  assert not {"model", "loss", "optim", "staging", "tokenizer"} & set(config.keys())
  assert "difficulty_head" not in config.curriculum
