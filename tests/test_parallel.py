import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from cmccl_jax import parallel


def test_sharding_rules_apply_to_abstract_params_by_path():
  mesh = parallel.make_mesh({"data": 2, "model": 4})
  tree = {"dense": {"kernel": jax.ShapeDtypeStruct((8, 16), np.float32),
                    "bias": jax.ShapeDtypeStruct((16,), np.float32)},
          "scale": jax.ShapeDtypeStruct((), np.float32)}
  shardings = parallel.tree_shardings(mesh, tree, [(".*kernel", (None, "model")), (".*", ("model",))])
  assert shardings["dense"]["kernel"].spec == P(None, "model")
  assert shardings["dense"]["bias"].spec == P("model")
  assert shardings["scale"].spec == P()  # a scalar cannot take a 1-d rule: replicated


def test_mesh_errors_name_the_shape():
  with pytest.raises(ValueError, match="needs 3 devices"):
    parallel.make_mesh({"data": 3})
