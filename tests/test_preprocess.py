"""`python -m preprocess` builds a real-data set with progress bars and prints what it skipped."""

import os
import subprocess
import sys

from tests import captioned_fixtures as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_preprocess_folder_prints_examples_skips_scoring_and_blocks(tmp_path):
  root = fx.make_folder(str(tmp_path / "folder"), fmt="jsonl")
  env = dict(os.environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
  r = subprocess.run(
      [sys.executable, "-m", "preprocess", "--config=configs/default.py", "--dataset=image_text_folder",
       f"--data_dir={tmp_path / 'tfds'}", f"--config.data.folder.root={root}", "--config.data.folder.image_size=16",
       "--config.curriculum.num_blocks=2", "--config.curriculum.scorer=caption_length",
       "--config.scoring.scorers=caption_length,noun_count,combined"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  out = r.stdout
  expected = fx.expected_folder()
  for split in ("train", "validation", "test"):
    assert f"  {split}: {len(expected[split])} examples\n" in out, out
  assert ("    train: corrupt_image 1, empty_caption 2, missing_image 1, no_caption 4, truncated_image 1, "
          "undecodable_caption 1\n") in out, out
  assert "    validation: nothing\n" in out and "    not tied to a split: malformed_record 1\n" in out, out
  assert "(truncated_image: images with a valid header whose data is cut off)" in out, out
  assert "difficulty scores (built now: caption_length, noun_count, combined); blocks for " in out, out
  scores = tmp_path / "tfds" / "difficulty_scores"
  assert f"  combined in {scores}/combined-x" in out and "({'combined': ['caption_length', 'noun_count']})" in out
  for name in ("caption_length", "noun_count"):
    assert f"  {name} in {scores}/{name}-image_text_folder-" in out, out
  assert out.count("    edges [") == 3 and out.count("    train block sizes [") == 3, out
  assert "Checking train" in r.stderr  # the progress bar of the first pass


def test_missing_coco_folder_is_one_line_naming_it_before_any_build(tmp_path):
  env = dict(os.environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
  r = subprocess.run(
      [sys.executable, "-m", "preprocess", "--config=configs/coco_vitb16_bert.py", f"--data_dir={tmp_path}",
       f"--config.data.coco.root={tmp_path / 'coco'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr[-3000:]
  assert f"error: the COCO-2014 folder {tmp_path / 'coco'}" in r.stderr and "cocodataset.org" in r.stderr, r.stderr
  assert "Traceback" not in r.stderr and "Downloading and preparing" not in r.stdout + r.stderr
