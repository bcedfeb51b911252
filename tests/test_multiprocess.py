"""Two processes on localhost (jax.distributed, CPU collectives) give what one process gives.

Each process has one CPU device, so the data axis spans the two processes: every
batch is split between them, and evaluation and sampling feed each process's share.
Training itself reads a different slice per process (as on a pod), so its losses
differ from a one-process run by design; what must agree exactly is everything
computed from a checkpoint: the retrieval metrics, the GAN's scores, its samples.
"""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", TF_CPP_MIN_LOG_LEVEL="3")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _one(*args):
  r = subprocess.run([sys.executable, "-m", "cmccl_jax.main", *args], cwd=REPO, env=_env(), capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return r.stdout


def _two(*args):
  """The same command in processes 0 and 1; both must succeed. Returns process 0's stdout."""
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-m", "cmccl_jax.main", "--multihost", f"--coordinator=127.0.0.1:{port}",
                             "--num_processes=2", f"--process_id={i}", *args],  # flags before a sample's "--"
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-3000:]
    outs.append(out)
  return outs[0]


def _bad_bytes(path):
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(data)


AGREE = """
import sys, jax
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from cmccl_jax import checkpoints
mine = "has a bad file" if jax.process_index() == 1 else None
print(repr(checkpoints.agreed(mine)), repr(checkpoints.agreed(None)))
"""


def test_processes_agree_on_a_checkpoint_only_one_finds_bad():
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-c", AGREE, f"127.0.0.1:{port}", str(i)], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert outs[0][0].strip().splitlines()[-1] == "'failed its check on process 1' None", outs
  assert outs[1][0].strip().splitlines()[-1] == "'has a bad file' None", outs


def _scores(path):
  with open(path) as f:
    return {int(r["step"]): {k: float(v) for k, v in r.items() if k != "step"} for r in csv.DictReader(f)}


@pytest.mark.timeout(1500)
def test_two_processes_train_evaluate_and_sample_as_one(tmp_path):
  data_dir = str(tmp_path / "data")  # built on first use by two processes at once
  stage1 = str(tmp_path / "de")
  _two("--mode=train", f"--workdir={stage1}", f"--config=tests/tiny_config.py:{data_dir}",
       "--config.eval_every_steps=12")
  with open(os.path.join(stage1, "metrics.jsonl")) as f:
    two_eval = [json.loads(line) for line in f if "eval/t2i/R@1" in line][-1]
  assert two_eval["step"] == 12
  _one("--mode=evaluate", f"--workdir={stage1}")
  one_eval = _scores(os.path.join(stage1, "scores.csv"))[12]
  for key in ("t2i/R@1", "t2i/R@5", "i2t/R@1", "t2i/mAP", "i2t/mean_rank", "mean_cos/positive"):
    assert two_eval[f"eval/{key}"] == pytest.approx(one_eval[key], rel=1e-5, abs=1e-6), key

  # A corrupt latest checkpoint: both processes skip it, fall back to step 8 and train to 12 again.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(stage1, resumed)
  step12 = os.path.join(resumed, "checkpoints", "12", "state")
  _bad_bytes(max((os.path.join(r, n) for r, _, ns in os.walk(step12) for n in ns), key=os.path.getsize))
  out = _two("--mode=train", f"--workdir={resumed}", f"--config=tests/tiny_config.py:{data_dir}",
             "--config.eval_every_steps=12")
  assert "skipped the bad checkpoint of step 12" in out and "resumed from step 8" in out, out
  assert os.path.isdir(os.path.join(resumed, "checkpoints_bad", "12"))
  assert sorted(os.listdir(os.path.join(resumed, "checkpoints"))) == sorted(os.listdir(os.path.join(stage1,
                                                                                                   "checkpoints")))

  gan = str(tmp_path / "gan")
  gan_config = f"--config=tests/tiny_config.py:{data_dir},{stage1}"
  _one("--mode=train", f"--workdir={gan}", gan_config)
  _one("--mode=evaluate", f"--workdir={gan}")
  one_scores = _scores(os.path.join(gan, "scores.csv"))
  _two("--mode=evaluate", f"--workdir={gan}")
  two_scores = _scores(os.path.join(gan, "scores.csv"))
  assert sorted(two_scores) == sorted(one_scores) == [1, 2, 4]
  for step, row in one_scores.items():
    for key, value in row.items():
      assert two_scores[step][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (step, key)

  captions = ["one red circle", "two blue squares", "a green triangle"]  # 3 × 3 rows: padded to the 2 processes
  one_png, two_png = str(tmp_path / "one.png"), str(tmp_path / "two.png")
  _one("--mode=sample", f"--workdir={gan}", "--num_samples=3", f"--out={one_png}", "--", *captions)
  _two("--mode=sample", f"--workdir={gan}", "--num_samples=3", f"--out={two_png}", "--", *captions)
  one, two = np.asarray(Image.open(one_png)), np.asarray(Image.open(two_png))
  assert one.shape == two.shape
  assert np.mean(np.abs(one.astype(int) - two.astype(int))) < 1.0  # the same samples, up to round-off
