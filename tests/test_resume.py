"""A run killed with SIGKILL and restarted ends exactly where an uninterrupted run ends, the state that changes
every step beside the weights included: I2MCL's thresholds and routing counts, the memory queue's ring."""

import csv
import os
import re
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

import jax

from tests import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module_args, workdir, data_dir, extra=()):
  cmd = [sys.executable, "-m", *module_args, f"--workdir={workdir}",
         f"--config=tests/tiny_config.py:{data_dir}", *extra]
  env = dict(os.environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _final_state(workdir):
  """(params leaves, curriculum state leaves with their paths) of the step-12 checkpoint."""
  state = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "12", "state"))
  dynamic = {"curriculum": state["curriculum"], "queue": state["queue"]}
  return jax.tree.leaves(state["params"]), jax.tree_util.tree_flatten_with_path(dynamic)[0]


def _scores(workdir):
  with open(os.path.join(workdir, "scores.csv")) as f:
    return list(csv.DictReader(f))


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_data_dir, tmp_path):
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  teacher = str(tmp_path / "teacher")
  tiny.save_random_experiment(teacher, [(12, 10.0)])
  flags = ["--mode=train", "--config.curriculum.dynamic.distill=True", "--config.curriculum.dynamic.intra=superloss",
           "--config.curriculum.dynamic.inter=True", f"--config.curriculum.dynamic.image_teacher={teacher}",
           f"--config.curriculum.dynamic.text_teacher={teacher}", "--config.loss.queue.size=32"]
  r = _run(["cmccl_jax.main"], straight, tiny_data_dir, flags)
  assert r.returncode == 0, r.stderr[-3000:]

  r = _run(["tests.kill_at_step", "7"], killed, tiny_data_dir, flags)
  assert r.returncode == -9, (r.returncode, r.stderr[-3000:])
  assert not os.path.exists(os.path.join(killed, "checkpoints", "12"))
  r = _run(["cmccl_jax.main"], killed, tiny_data_dir, flags)
  assert r.returncode == 0, r.stderr[-3000:]
  # The latest *complete* checkpoint: step 4's asynchronous write may not have
  # finished when the kill landed, and then step 1 (orbax always keeps the first).
  assert "took over" in r.stdout and "which is no longer running" in r.stdout  # the killed run's lock
  resumed = re.search(r"resumed from step (\d+)", r.stdout)
  assert resumed and int(resumed.group(1)) in (1, 4), r.stdout

  (params_a, curriculum_a), (params_b, curriculum_b) = _final_state(straight), _final_state(killed)
  for a, b in zip(params_a, params_b, strict=True):
    np.testing.assert_array_equal(a, b)
  names = {jax.tree_util.keystr(path) for path, _ in curriculum_a}
  assert any("thresholds" in n for n in names) and any("task_steps" in n for n in names), names
  assert "['queue']['a']" in names and "['queue']['ptr']" in names, names
  assert [jax.tree_util.keystr(p) for p, _ in curriculum_b] == [jax.tree_util.keystr(p) for p, _ in curriculum_a]
  for (path, a), (_, b) in zip(curriculum_a, curriculum_b):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  assert int(np.asarray(dict((jax.tree_util.keystr(p), v) for p, v in curriculum_a)["['curriculum']['steps']"])) == 12

  # test.sh's path: every checkpoint scored, identical final metrics.
  for workdir in (straight, killed):
    r = subprocess.run([sys.executable, "-m", "cmccl_jax.main", "--mode=evaluate", f"--workdir={workdir}"],
                       cwd=REPO, env=dict(os.environ, XLA_FLAGS=""), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
  straight_rows, killed_rows = _scores(straight), _scores(killed)
  assert [row["step"] for row in straight_rows] == ["1", "4", "8", "12"]
  assert [row["step"] for row in killed_rows] == ["1", "4", "8", "12"]
  assert straight_rows == killed_rows
  assert float(straight_rows[-1]["t2i/R@1"]) >= 0.0
