"""TFDS features every dataset of the project carries, so the pipeline reads them the same way."""

import numpy as np
import tensorflow_datasets as tfds


def curriculum_features(scorers) -> dict[str, tfds.features.FeaturesDict]:
  """`difficulty/<scorer>` (float32, higher = harder) and `block/<scorer>` (int32 quantile block)."""
  return {
      "difficulty": tfds.features.FeaturesDict({name: tfds.features.Scalar(dtype=np.float32) for name in scorers}),
      "block": tfds.features.FeaturesDict({name: tfds.features.Scalar(dtype=np.int32) for name in scorers}),
  }
