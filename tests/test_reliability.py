"""Drills of a user's bad day: what survives what (the table is in docs/reliability.md).

Each test breaks one thing the way it breaks in practice (a corrupt or vanished
checkpoint, a diverging run, a second trainer, a changed config, a kill before an
eval, a full disk, a bad config value) and checks that nothing is lost, nothing
is silent and every message names what to fix.
"""

import errno
import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import ml_collections
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorboard.backend.event_processing import plugin_event_accumulator

from cmccl_jax import checkpoints, cli, tasks
from cmccl_jax.data import datasets
from cmccl_jax.data import image_text_folder as itf
from cmccl_jax.errors import UserError
from cmccl_jax.run import loop
from cmccl_jax.tasks.dual_encoder.task import DualEncoderTask
from cmccl_jax.workdir import CONFIG_HISTORY, Workdir, write_error
from tests import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir, **overrides):
  config = tiny.tiny_config(data_dir)
  config.eval_every_steps = 8  # evals at 8 and 12 (the last step)
  for field, value in overrides.items():
    node = config
    *path, last = field.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return config


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
  """A tiny experiment trained to step 12: checkpoints 1, 4, 8, 12; evals at 8 and 12."""
  workdir = str(tmp_path_factory.mktemp("reliability") / "trained")
  loop.train(_config(tiny_data_dir), workdir)
  return workdir


@pytest.fixture
def experiment(trained, tmp_path):
  """A fresh copy of the trained experiment for one test to break."""
  workdir = str(tmp_path / "exp")
  shutil.copytree(trained, workdir)
  return workdir


def _biggest(pattern):
  return max((f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f)), key=os.path.getsize)


def _flip_bytes(path):
  data = bytearray(open(path, "rb").read())
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
  open(path, "wb").write(data)


# Ways a checkpoint step directory breaks: a kill or a full disk mid-write, bit rot, a hand-made mess.
CORRUPTIONS = {
    "truncated array file": lambda d: open(_biggest(f"{d}/state/**/d/*"), "r+b").truncate(100),
    "flipped bytes in an array file (orbax alone restores them silently)": lambda d: _flip_bytes(
        _biggest(f"{d}/state/**/d/*")),
    "garbled state metadata": lambda d: open(f"{d}/state/_METADATA", "wb").write(os.urandom(200)),
    "garbled checkpoint metadata (the utf-8 error)": lambda d: open(f"{d}/_CHECKPOINT_METADATA", "wb").write(
        b"\xb7" * 50),
    "missing iterator file": lambda d: os.remove(f"{d}/data/process_0.index"),
    "empty step directory": lambda d: (shutil.rmtree(d), os.makedirs(d)),
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_corrupt_latest_checkpoint_falls_back_to_the_newest_good(experiment, tiny_data_dir, corrupt, capsys):
  CORRUPTIONS[corrupt](os.path.join(experiment, "checkpoints", "12"))
  config = _config(tiny_data_dir)
  task = DualEncoderTask(config)
  manager = Workdir(experiment).checkpoint_manager(read_only=False)
  lines = []
  step, state = checkpoints.restore_newest_good(manager, task.abstract_state, task.train_batches(16), lines.append)
  assert step == 8 and int(state.step) == 8
  assert len(lines) == 1 and "step 12" in lines[0] and "checkpoints_bad" in lines[0], lines
  assert manager.all_steps() == [1, 4, 8]
  assert os.path.isdir(os.path.join(experiment, "checkpoints_bad", "12"))  # moved aside, not deleted


def test_resume_after_a_corrupt_checkpoint_replays_without_duplicate_logs(experiment, tiny_data_dir, capsys):
  CORRUPTIONS["truncated array file"](os.path.join(experiment, "checkpoints", "12"))
  wd = Workdir(experiment)
  before = wd.read_metrics()
  loop.train(_config(tiny_data_dir), experiment)
  out = capsys.readouterr().out
  assert "skipped the bad checkpoint of step 12" in out and "resumed from step 8" in out, out
  after = wd.read_metrics()
  keys = [(r["step"], tuple(sorted(r))) for r in after]
  assert len(keys) == len(set(keys)), "a replayed step was logged twice"
  assert [r["step"] for r in after] == [r["step"] for r in before]
  np.testing.assert_allclose([r.get("loss", 0) for r in after], [r.get("loss", 0) for r in before], rtol=1e-5)
  assert wd.checkpoint_steps() == [1, 4, 8, 12]
  # TensorBoard too: the run-start marker makes it drop the first run's points of the replayed steps.
  events = plugin_event_accumulator.EventAccumulator(experiment, size_guidance={"tensors": 0})
  events.Reload()
  steps = [e.step for e in events.Tensors("loss")]
  assert steps == [4, 8, 12], steps


def test_when_every_checkpoint_is_bad_nothing_is_moved(experiment, tiny_data_dir):
  for step in (1, 4, 8, 12):
    CORRUPTIONS["garbled state metadata"](os.path.join(experiment, "checkpoints", str(step)))
  with pytest.raises(UserError, match="no checkpoint can be resumed from.*step 12.*step 1"):
    loop.train(_config(tiny_data_dir), experiment)
  assert Workdir(experiment).checkpoint_steps() == [1, 4, 8, 12]
  assert not os.path.exists(os.path.join(experiment, "checkpoints_bad"))


def test_test_sh_scores_the_good_checkpoints_and_lists_the_bad(experiment, tiny_data_dir, monkeypatch, capsys):
  CORRUPTIONS["truncated array file"](os.path.join(experiment, "checkpoints", "4"))
  wd = Workdir(experiment)
  listed = wd.checkpoint_steps()
  # The trainer's rotation removes step 8 after test.sh listed it.
  monkeypatch.setattr(Workdir, "checkpoint_steps_or_raise", lambda self: listed)
  shutil.rmtree(os.path.join(experiment, "checkpoints", "8"))
  rows = loop.evaluate_checkpoints(_config(tiny_data_dir), experiment)
  assert [r["step"] for r in rows] == [1, 12]
  out = capsys.readouterr().out
  assert "step 4: skipped" in out and "step 8: skipped" in out and "is gone" in out
  assert "skipped 2 bad: steps [4, 8]" in out
  with open(os.path.join(experiment, "scores.csv")) as f:
    assert [line.split(",")[0] for line in f.read().splitlines()] == ["step", "1", "12"]


def test_divergence_stops_at_that_step_and_keeps_only_finite_checkpoints(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / "diverged")
  config = _config(tiny_data_dir, **{"optim.learning_rate": 1e8, "optim.grad_clip_norm": 1e30,
                                     "loss.max_scale": 1e30, "checkpoint_every_steps": 2, "keep_checkpoints": 2})
  with pytest.raises(loop.Diverged, match=r"diverged at step (\d+): .*loss=nan.*newest good checkpoint is step") as e:
    loop.train(config, workdir)
  assert "optim.learning_rate" in str(e.value)
  failed = int(str(e.value).split("step ")[1].split(":")[0])
  wd = Workdir(workdir)
  steps = wd.checkpoint_steps()
  assert steps and max(steps) < failed
  task = DualEncoderTask(config)
  for step in steps:  # every kept checkpoint restores and is finite (checked inside)
    wd.restore_state(step, task.abstract_state)


def test_a_non_finite_state_is_never_written(trained, tiny_data_dir, tmp_path):
  task = DualEncoderTask(_config(tiny_data_dir))
  state = Workdir(trained).restore_state(12, task.abstract_state)
  state = state.replace(params=jax_tree_nan_first(state.params))
  manager = checkpoints.checkpoint_manager(str(tmp_path), every_steps=1, keep=2)
  with pytest.raises(checkpoints.NonFiniteState, match="NaN or inf in"):
    checkpoints.save(manager, 13, state, task.train_batches(16), force=True)
  checkpoints.finish(manager)
  assert manager.all_steps() == []


def test_sealing_runs_beside_training_survives_rotation_and_reports_a_full_disk(experiment, monkeypatch):
  manager = Workdir(experiment).checkpoint_manager(read_only=False)
  for step in manager.all_steps():
    os.remove(os.path.join(experiment, "checkpoints", str(step), checkpoints.MANIFEST))
  digest = checkpoints._digest
  def rotated_while_hashed(path):  # orbax's rotation deletes step 1 while the sealer reads it
    if "/checkpoints/1/" in path:
      shutil.rmtree(os.path.join(experiment, "checkpoints", "1"))
      raise FileNotFoundError(path)
    return digest(path)
  monkeypatch.setattr(checkpoints, "_digest", rotated_while_hashed)
  checkpoints.seal(manager, wait=True)
  assert [checkpoints.verify(manager, s) for s in (4, 8, 12)] == [None] * 3
  assert all(os.path.exists(os.path.join(experiment, "checkpoints", s, checkpoints.MANIFEST)) for s in ("4", "8", "12"))

  os.remove(os.path.join(experiment, "checkpoints", "12", checkpoints.MANIFEST))
  def full(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(checkpoints, "_digest", full)
  checkpoints.seal(manager)  # starts the job in the background: returns at once
  with pytest.raises(OSError, match="No space left"):
    checkpoints.seal(manager, wait=True)  # the next call reports it


def jax_tree_nan_first(tree):
  leaves, treedef = jax.tree.flatten(tree)
  leaves[0] = leaves[0] * float("nan")
  return jax.tree.unflatten(treedef, leaves)


@pytest.mark.parametrize("field,value", [("optim.grad_clip_norm", 0.0), ("optim.grad_clip_norm", -1.0),
                                         ("optim.learning_rate", -1e-3), ("optim.weight_decay", -0.1)])
def test_nonsensical_optimiser_values_are_refused(tiny_data_dir, field, value):
  with pytest.raises(UserError, match=f"config.{field}="):
    tasks.validate(_config(tiny_data_dir, **{field: value}))


def test_a_second_trainer_is_refused_and_a_stale_lock_taken_over(experiment, tiny_data_dir, capsys):
  wd = Workdir(experiment)
  config = _config(tiny_data_dir)
  with wd.lock():  # a run in progress
    with pytest.raises(UserError, match=r"is being trained by pid \d+ on .* \(lock .*train.lock\)"):
      loop.train(config, experiment)
  with open(wd.file("train.lock"), "w") as f:  # what a killed run leaves: a holder line, no flock
    f.write("pid 99999 on elsewhere since 2026-01-01 00:00:00\n")
  loop.train(config, experiment)
  assert "took over" in capsys.readouterr().out and "pid 99999" not in open(wd.file("train.lock")).read()


@pytest.mark.parametrize("field,value", [("model.embed_dim", 32), ("batch_size", 8),
                                         ("data.synthetic.num_train", 80), ("data.shuffle_buffer", 32),
                                         ("curriculum.pacing", "root"), ("model.image.depth", 2)])
def test_a_resume_refuses_changes_of_shapes_and_data(experiment, tiny_data_dir, field, value):
  saved = open(os.path.join(experiment, "config.json")).read()
  with pytest.raises(UserError, match=rf"checkpoints up to step 12 of another config: config\.{field}: "):
    loop.train(_config(tiny_data_dir, **{field: value}), experiment)
  assert open(os.path.join(experiment, "config.json")).read() == saved


def test_a_resume_allows_safe_changes_and_keeps_the_config_history(experiment, tiny_data_dir, capsys):
  loop.train(_config(tiny_data_dir, **{"num_steps": 14, "optim.learning_rate": 5e-4}), experiment)
  out = capsys.readouterr().out
  assert "resuming with config.num_steps: 12 -> 14" in out and "config.optim.learning_rate: 0.001 -> 0.0005" in out
  with open(os.path.join(experiment, CONFIG_HISTORY)) as f:
    history = [json.loads(line) for line in f]
  assert [h["resume_step"] for h in history] == [None, 12]
  assert history[0]["config"]["optim"]["learning_rate"] == 1e-3  # the first config is still there
  assert Workdir(experiment).load_config().optim.learning_rate == 5e-4
  assert Workdir(experiment).checkpoint_steps()[-1] == 14


def test_a_resume_allows_a_grown_ablation_grid(experiment, tiny_data_dir, capsys):
  # The ablation driver alone reads config.ablation: adding a variant mid-grid must not strand a stopped run.
  config = _config(tiny_data_dir, num_steps=13)
  with config.unlocked():
    config.ablation = ml_collections.ConfigDict({"run": ["baseline", "queue"]})
  loop.train(config, experiment)
  assert "config.ablation.run: \"(absent)\" -> [\"baseline\", \"queue\"]" in capsys.readouterr().out
  assert Workdir(experiment).checkpoint_steps()[-1] == 13


def test_an_experiment_saved_before_a_field_existed_resumes_and_a_new_value_is_refused(experiment, tiny_data_dir,
                                                                                     capsys):
  path = os.path.join(experiment, "config.json")
  saved = json.load(open(path))
  for field in ("min_objects", "caption_levels", "distractors"):
    del saved["data"]["synthetic"][field]
  json.dump(saved, open(path, "w"))
  loop.train(_config(tiny_data_dir, num_steps=13), experiment)
  assert "resuming with config.num_steps: 12 -> 13" in capsys.readouterr().out
  json.dump(saved, open(path, "w"))  # without the fields again
  with pytest.raises(UserError, match=r"config.data.synthetic.distractors: false -> true"):
    loop.train(_config(tiny_data_dir, num_steps=13, **{"data.synthetic.distractors": True}), experiment)


def test_an_eval_missed_by_a_kill_runs_on_resume(experiment, tiny_data_dir, capsys):
  wd = Workdir(experiment)
  records = wd.read_metrics()
  # The kill landed after step 12's checkpoint and before its evaluation.
  with open(wd.file("metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records if not (r["step"] == 12 and "eval/t2i/R@1" in r))
  scores = loop.train(_config(tiny_data_dir), experiment)
  assert "running the eval evaluation of step 12" in capsys.readouterr().out
  evals = [r for r in wd.read_metrics() if "eval/t2i/R@1" in r]
  assert [r["step"] for r in evals] == [8, 12]
  assert scores["t2i/R@1"] == pytest.approx(evals[-1]["eval/t2i/R@1"])
  assert loop.train(_config(tiny_data_dir), experiment) == {}  # nothing missed now: nothing runs


def test_a_full_disk_at_a_save_is_one_line(experiment, tiny_data_dir, monkeypatch):
  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "save", full)
  with pytest.raises(UserError, match=r"cannot write .*checkpoints/13: No space left on device; free some space"):
    loop.train(_config(tiny_data_dir, num_steps=14), experiment)


def test_library_threads_log_no_traceback_for_a_disk_error():
  def record(exc):
    return logging.LogRecord("orbax", logging.ERROR, __file__, 1, "save failed", None, (type(exc), exc, None))
  keep = cli._DiskErrorsReportedOnce().filter
  assert not keep(record(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
  assert keep(record(KeyError("params")))  # a bug's traceback stays


def test_disk_errors_are_found_inside_orbax_wrappers_and_bugs_are_left_alone():
  try:
    try:
      raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    except OSError as cause:
      raise RuntimeError("save failed in the finalize thread") from cause
  except RuntimeError as e:
    wrapped = e
  assert "Read-only file system; use a writable disk" in str(write_error("/x/checkpoints/4", wrapped))
  text_only = ValueError("Error writing local file: [OS error: No space left on device]")
  assert isinstance(write_error("/x", text_only), UserError)
  bug = KeyError("params")
  assert write_error("/x", bug) is bug


@pytest.mark.parametrize("field,value,message", [
    ("eval_batch_size", 0, "config.eval_batch_size=0 must be a positive integer"),
    ("model.image.num_heads", 3, "config.model.image.num_heads=3 does not divide config.model.image.width=16"),
    ("model.embed_dim", 0, "config.model.embed_dim=0 must be a positive integer"),
    ("model.image.patch_size", 7, "config.model.image.patch_size=7 does not divide the 32-pixel input images"),
    ("model.image.dropout", 1.5, "config.model.image.dropout=1.5 is a dropout rate"),
    ("model.text.num_heads", 0, "config.model.text.num_heads=0 must be a positive integer"),
    ("loss.scale_init", 0.0, "config.loss.scale_init=0.0 must be positive"),
    ("loss.max_scale", 1.0, "exceeds config.loss.max_scale=1.0"),
    ("data.shuffle_buffer", 0, "config.data.shuffle_buffer=0 must be a positive number"),
    ("optim.end_lr_fraction", -1.0, "config.optim.end_lr_fraction=-1.0 must be in [0, 1]"),
    ("curriculum.difficulty_head.hidden", -3, "config.curriculum.difficulty_head.hidden=-3 must be >= 0"),
])
def test_bad_config_values_name_the_field(tiny_data_dir, field, value, message):
  with pytest.raises(UserError, match=re.escape(message)):
    tasks.validate(_config(tiny_data_dir, **{field: value}))


@pytest.mark.parametrize("args,message", [
    (["--config=configs/nope.py"], "--config=configs/nope.py: no such file"),
    (["--config=configs/default.py", "--config.batch_size=12.5"],
     "flag --config.batch_size=12.5: invalid literal for int()"),
])
def test_bad_command_lines_are_one_line(tmp_path, args, message):
  r = subprocess.run([sys.executable, "-m", "cmccl_jax.main", f"--workdir={tmp_path}", *args], cwd=REPO,
                     env=dict(os.environ, XLA_FLAGS=""), capture_output=True, text=True, timeout=300)
  assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------- the folder builder: what it reads

_WATCHED: list[str] = []   # while a test runs: folders no open() may touch
_OPENED: list[str] = []    # what was opened in them anyway


def _audit(event, args):
  if event == "open" and _WATCHED and isinstance(args[0], (str, bytes, os.PathLike)):
    path = os.path.realpath(os.fsdecode(args[0]))
    if any(path.startswith(w + os.sep) for w in _WATCHED):
      _OPENED.append(path)


sys.addaudithook(_audit)  # the interpreter's own record of every open(), PIL's included


def _png(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array, mode).save(path)


def _folder_with_links(tmp_path):
  """3 good images, a file symlink and a symlinked folder leading outside, a link to /etc/passwd."""
  root, outside = tmp_path / "root", tmp_path / "outside"
  rng = np.random.default_rng(0)
  for i in range(3):
    _png(str(root / "imgs" / f"{i}.png"), rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
  _png(str(outside / "secret.png"), rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
  _png(str(outside / "dir" / "a.png"), rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
  os.symlink(outside / "secret.png", root / "imgs" / "link.png")
  os.symlink(outside / "dir", root / "linked")
  os.symlink("/etc/passwd", root / "link_passwd.jpg")
  lines = [{"image": f"imgs/{i}.png", "caption": f"image {i}", "split": "train"} for i in range(3)]
  lines += [{"image": "imgs/link.png", "caption": "secret", "split": "train"},
            {"image": "linked/a.png", "caption": "linked", "split": "train"},
            {"image": "link_passwd.jpg", "caption": "passwd", "split": "train"}]
  (root / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
  return str(root), str(outside)


def _build_folder(data_dir, root):
  builder = itf.ImageTextFolder(data_dir=str(data_dir), config=itf.image_text_folder_config(root=root, image_size=16))
  builder.download_and_prepare()
  examples = {ex["captions"][0].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split="train"))}
  return builder, examples


def test_the_folder_builder_never_reads_outside_its_root(tmp_path):
  root, outside = _folder_with_links(tmp_path)
  _WATCHED[:] = [os.path.realpath(outside), "/etc"]
  try:
    builder, examples = _build_folder(tmp_path / "tfds", root)
  finally:
    _WATCHED.clear()
  assert _OPENED == [], f"opened outside the root: {_OPENED}"
  assert sorted(examples) == ["image 0", "image 1", "image 2"]
  assert builder.info.metadata["skipped"]["train"] == {"outside_root": 3}
  assert builder.info.metadata["skipped_examples"]["outside_root"] == [
      "imgs/link.png", "linked/a.png", "link_passwd.jpg"]


def test_a_symlinked_captions_file_outside_the_root_is_refused(tmp_path):
  root, outside = _folder_with_links(tmp_path)
  os.replace(os.path.join(root, "captions.jsonl"), os.path.join(outside, "captions.jsonl"))
  os.symlink(os.path.join(outside, "captions.jsonl"), os.path.join(root, "captions.jsonl"))
  with pytest.raises(UserError, match="is a symlink to .*outside the image folder.*captions_file"):
    _build_folder(tmp_path / "tfds", root)


def test_strips_are_skipped_by_name_and_16_bit_images_keep_their_tones(tmp_path):
  root = tmp_path / "root"
  rng = np.random.default_rng(0)
  for i in range(2):
    _png(str(root / f"{i}.png"), rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
  _png(str(root / "strip.png"), np.full((10, 4000, 3), 90, np.uint8))  # crashed the build: JPEG's 65500 limit
  gradient = np.linspace(0, 65535, 24 * 24).reshape(24, 24).astype(np.uint16)
  _png(str(root / "gray16.png"), gradient)  # came out 99.6% white
  names = {"0.png": "image 0", "1.png": "image 1", "strip.png": "strip", "gray16.png": "gray"}
  (root / "captions.jsonl").write_text(
      "".join(json.dumps({"image": k, "caption": v, "split": "train"}) + "\n" for k, v in names.items()))
  builder, examples = _build_folder(tmp_path / "tfds", str(root))
  assert sorted(examples) == ["gray", "image 0", "image 1"]
  assert builder.info.metadata["skipped"]["train"] == {"extreme_aspect": 1}
  assert builder.info.metadata["skipped_examples"]["extreme_aspect"] == ["strip.png"]
  gray = examples["gray"]["image"].astype(float)
  assert 110 < gray.mean() < 145 and gray.min() < 20 and gray.max() > 235


def test_a_killed_build_leaves_nothing_behind(tmp_path):
  leftover = tmp_path / "synthetic_shapes" / "some-config" / "incomplete.ABC123_1.0.0"
  os.makedirs(leftover)
  (leftover / "synthetic_shapes-train.tfrecord-00000-of-00001").write_bytes(b"half a shard")
  finished = tmp_path / "synthetic_shapes" / "some-config" / "1.0.0"
  os.makedirs(finished)
  with datasets.exclusive_builds(str(tmp_path)):
    assert not leftover.exists() and finished.exists()
