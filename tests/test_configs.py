"""Every shipped config validates and describes a model that builds (abstractly, so sizes cost nothing)."""

import glob
import importlib
import os

import jax
import pytest

from cmccl_jax import config_validation, parallel
from cmccl_jax.data.tokenizer import load_vocab
from cmccl_jax.train.model_setup import ModelSetup

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(os.path.dirname(__file__), "..",
                                                                            "configs", "[a-z]*.py")))


def _param_count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_builds(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  config_validation.validate(config)
  size = config.data.image_size or config.data.synthetic.image_size
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  setup = ModelSetup(config, mesh, (size, size, 3), len(load_vocab(config.tokenizer.vocab)))
  assert _param_count(setup.abstract_state.params) > 0


def test_coco_config_has_vit_b16_and_bert_base_sizes():
  config = importlib.import_module("configs.coco_vitb16_bert").get_config()
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  setup = ModelSetup(config, mesh, (224, 224, 3), len(load_vocab(config.tokenizer.vocab)))
  params = setup.abstract_state.params["params"]
  # ViT-B/16 at 224 px without its classifier: 85.8M; BERT-base without pooler: 108.9M.
  assert _param_count(params["image_tower"]) == pytest.approx(85.8e6, rel=0.01)
  assert _param_count(params["text_tower"]) == pytest.approx(108.9e6, rel=0.01)
