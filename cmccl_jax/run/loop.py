"""The one host loop: the only place with side effects (I/O, checkpoints, summaries), for every task.

`train` reads top to bottom: logging → task (mesh, input, model, sharding) → update
step → checkpoint → evaluators → loop. `evaluate_checkpoints` is the checkpoint
sweep of `test.sh`. What differs between models lives in their task
(`cmccl_jax.tasks`); what is written where, in the workdir (`cmccl_jax.workdir`).
"""

import contextlib
import time

import jax
from clu import metric_writers

from cmccl_jax import checkpoints, parallel, summaries
from cmccl_jax.errors import UserError
from cmccl_jax.scoring.score_shards import prepare_data
from cmccl_jax.tasks import added_fields, base, make_task, safe_on_resume
from cmccl_jax.workdir import TEST, Workdir, write_error

# The main evaluator, whose metrics scores.csv lists without their `eval/` prefix.
MAIN_EVAL = "eval"


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StepTimer:
  """Times training steps only: the first (compiling) step and evaluations are left out."""

  def __init__(self, start: int, num_steps: int, batch_size: int):
    self.start, self.num_steps, self.batch_size = start, num_steps, batch_size
    self.t_start = self.t_last = None
    self.last_logged = start

  def step_done(self, step: int, state) -> None:
    if self.t_start is None:
      jax.block_until_ready(state)
      self.t_start = self.t_last = time.time()
      self.last_logged = step

  def scalars(self, step: int) -> dict[str, float]:
    """step_time_ms and examples_per_sec since the last call (none right after the first step)."""
    now = time.time()
    out = {}
    if step > self.last_logged:
      dt = max(now - self.t_last, 1e-9)
      out = {"step_time_ms": 1000 * dt / (step - self.last_logged),
             "examples_per_sec": (step - self.last_logged) * self.batch_size / dt}
    self.t_last, self.last_logged = now, step
    return out

  def progress(self, step: int, scalars: dict) -> str:
    """The log line's tail: ex/s, ms/step and the ETA at the training rate so far."""
    rate = (step - (self.start + 1)) / max(time.time() - self.t_start, 1e-9)
    eta = (self.num_steps - step) / rate if rate > 0 else 0.0
    return (f"| {scalars.get('examples_per_sec', 0):.0f} ex/s {scalars.get('step_time_ms', 0):.0f} ms/step "
            f"| ETA {format_duration(eta)}")

  def exclude(self, seconds: float) -> None:
    """Leaves `seconds` (an evaluation) out of the throughput and the ETA."""
    if self.t_start is not None:
      self.t_start += seconds
      self.t_last += seconds


def resume_or_init(manager, task: base.Task, train_iter, name: str):
  """The newest good checkpoint's state (and data position) in `manager`, or the task's fresh state.

  Bad newer checkpoints are moved aside with a line each (`checkpoints.restore_newest_good`).
  """
  step, state = checkpoints.restore_newest_good(manager, task.abstract_state, train_iter,
                                                log=lambda line: print(f"[{name}] {line}", flush=True))
  if step is None:
    return task.init_state()
  print(f"[{name}] resumed from step {step} in {manager.directory}", flush=True)
  return state


class Diverged(UserError):
  """The loss or the gradients stopped being finite: the run stops, with nothing of that step saved."""


class DivergenceGuard:
  """Stops the run at the first step whose metrics (loss, gradient norm, ...) hold a NaN or an infinity.

  Each step's check is read one step late, so the host never waits for the device
  just to check; `check_now` reads it at once, before a checkpoint is written.
  """

  def __init__(self, hint: str, manager):
    self.hint, self.manager = hint, manager
    self.pending = None

  def push(self, step: int, metrics) -> None:
    """Checks the previous step and queues this one's check."""
    self.check_now()
    self.pending = (step, checkpoints.finite_flags(metrics), metrics)

  def check_now(self) -> None:
    if self.pending is None:
      return
    step, flags, metrics = self.pending
    self.pending = None
    bad = checkpoints.non_finite(*flags)
    if bad:
      leaves = {checkpoints.leaf_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(metrics)}
      values = [f"{name}={parallel.to_host(leaves[name])}" for name in bad]
      self.fail(step, ", ".join(values[:4]) + (f" (and {len(values) - 4} more)" if len(values) > 4 else "")
                + " is not finite")

  def fail(self, step: int, what: str) -> None:
    checkpoints.finish(self.manager)  # the save in flight is of an earlier, finite step
    good = self.manager.latest_step()
    where = (f"the newest good checkpoint is step {good} in {self.manager.directory}" if good is not None
             else "there is no checkpoint yet")
    raise Diverged(f"training diverged at step {step}: {what}. Nothing of this step or later was saved; {where}. "
                   f"To go on, {self.hint}, then run the same command again (it resumes from there).")


def _writer(path: str):
  with _disk_errors(path):
    return metric_writers.create_default_writer(path, just_logging=jax.process_index() > 0)


def _prefixed(name: str, scores: dict[str, float]) -> dict[str, float]:
  return {f"{name}/{k}": v for k, v in scores.items()}


def train(config, workdir: str) -> dict[str, float]:
  """Trains `config`'s task into `workdir` (resuming from its newest good checkpoint); returns the last main eval.

  One run per workdir: it holds the workdir's lock throughout.
  """
  wd = Workdir(workdir)
  with wd.lock():
    return _train(config, wd)


def _train(config, wd: Workdir) -> dict[str, float]:
  # ------------------------------------------------------------------ the config against the checkpoints
  name = wd.name
  manager = wd.checkpoint_manager(every_steps=int(config.checkpoint_every_steps),
                                  keep=int(config.keep_checkpoints), read_only=False)
  for line in wd.start_config(config, manager.latest_step(), safe_on_resume(config), added_fields(config)):
    print(f"[{name}] resuming with {line}", flush=True)

  # ------------------------------------------------------------------ task: mesh, input, model, sharding
  prepare_data(config)  # first use: the image shards and the difficulty scores the run reads
  task = make_task(config, wd)
  if jax.process_index() == 0:
    for line in task.describe().splitlines():
      print(f"[{name}] {line}", flush=True)
  num_steps = int(config.num_steps)
  local_bs = parallel.local_batch_size(int(config.batch_size), task.mesh)
  train_iter = task.train_batches(local_bs)

  # ------------------------------------------------------------------ update step
  step_fn = task.train_step()

  # ------------------------------------------------------------------ checkpoint
  state = resume_or_init(manager, task, train_iter, name)
  start = int(state.step)
  replayed = wd.forget_metrics_after(start)
  if replayed:
    print(f"[{name}] dropped {replayed} metrics.jsonl records of steps after {start}, which this run replays",
          flush=True)
  guard = DivergenceGuard(task.divergence_hint(), manager)

  # ------------------------------------------------------------------ logging (from the step this run starts at)
  if jax.process_index() == 0:
    with _disk_errors(wd.path):
      summaries.write_run_start(wd.path, start + 1)  # TensorBoard drops a killed run's points from here on
  writer = _writer(wd.path)
  if jax.process_index() == 0 and start == 0:
    writer.write_texts(0, {"curriculum/blocks": task.describe()})

  # ------------------------------------------------------------------ evaluators
  evaluators = task.evaluators()
  evaluated: set[str] = set()
  last_eval: dict[str, float] = {}

  def evaluate(step: int, eval_name: str, evaluator: base.Evaluator) -> dict[str, float]:
    t0 = time.time()
    scores = evaluator(state)
    evaluator.write_summaries(writer, step, state, first=eval_name not in evaluated)
    evaluated.add(eval_name)
    writer.write_scalars(step, _prefixed(eval_name, scores))
    wd.save_per_query(eval_name, step, evaluator.per_query())
    wd.append_metrics({"step": step, **_prefixed(eval_name, scores)})
    print(f"[{name}] {eval_name} @ {step}: {evaluator.summary(scores)} ({time.time() - t0:.1f}s)", flush=True)
    return scores

  # A kill between a checkpoint and its step's evaluations loses them: they run now.
  for eval_name, (evaluator, every) in evaluators.items():
    if start > 0 and base.is_eval_step(start, every, num_steps) and not wd.has_eval(start, eval_name):
      print(f"[{name}] running the {eval_name} evaluation of step {start}, which the last run did not finish",
            flush=True)
      scores = evaluate(start, eval_name, evaluator)
      last_eval = scores if eval_name == MAIN_EVAL else last_eval

  # ------------------------------------------------------------------ loop
  if start >= num_steps:
    print(f"[{name}] already trained to step {start} (config.num_steps={num_steps}).", flush=True)
  timer = StepTimer(start, num_steps, int(config.batch_size))
  for step in range(start + 1, num_steps + 1):
    host_batch = next(train_iter)
    if step == start + 1:
      summaries.write_input_examples(writer, step, host_batch, task.tokenizer)
    task.observe_batch(step - 1, host_batch)
    state, metrics = step_fn(state, parallel.global_batch(task.mesh, host_batch))
    guard.push(step, metrics)
    timer.step_done(step, state)
    host_metrics = None
    if step % int(config.log_every_steps) == 0 or step == num_steps:
      guard.check_now()
      host_metrics = jax.tree.map(parallel.to_host, metrics)
      scalars = {**task.scalars(host_metrics), **timer.scalars(step)}
      task.write_log_summaries(writer, step)
      writer.write_scalars(step, scalars)
      wd.append_metrics({"step": step, **scalars})
      print(f"[{name}] step {step}/{num_steps} ({100 * step / num_steps:.0f}%) {task.log_line(scalars)} "
            f"{timer.progress(step, scalars)}", flush=True)

    if step == num_steps or manager.should_save(step):
      guard.check_now()  # no non-finite state is ever written
    _save(manager, step, state, train_iter, force=step == num_steps, guard=guard)
    due = [(n, e) for n, (e, every) in evaluators.items() if base.is_eval_step(step, every, num_steps)]
    if due:
      t0 = time.time()
      host_metrics = host_metrics or jax.tree.map(parallel.to_host, metrics)
      task.write_eval_summaries(writer, step, host_metrics, host_batch)
      for eval_name, evaluator in due:
        scores = evaluate(step, eval_name, evaluator)
        if eval_name == MAIN_EVAL:
          last_eval = scores
      timer.exclude(time.time() - t0)
  _finish(manager)
  writer.flush()
  return last_eval


def _save(manager, step: int, state, train_iter, *, force: bool, guard: DivergenceGuard) -> None:
  """checkpoints.save, with a refused non-finite state reported as divergence."""
  with _disk_errors(checkpoints.step_directory(manager, step)):
    try:
      checkpoints.save(manager, step, state, train_iter, force=force)
    except checkpoints.NonFiniteState as e:
      guard.fail(step, str(e))


def _finish(manager) -> None:
  with _disk_errors(str(manager.directory)):
    checkpoints.finish(manager)


@contextlib.contextmanager
def _disk_errors(path: str):
  """A full disk or a refused write (orbax raises them from its threads, in its own wrappers) as one line."""
  try:
    yield
  except UserError:
    raise
  except Exception as e:  # noqa: BLE001 - anything else keeps its traceback
    error = write_error(path, e)
    if error is e:
      raise
    raise error from e


def evaluate_checkpoints(config, workdir: str) -> list[dict[str, float]]:
  """Scores every good checkpoint in `workdir` with every evaluator: scores.csv and TensorBoard under test/.

  Reads beside a running trainer too: a bad checkpoint, or one its rotation removed
  meanwhile, is skipped with a line and listed at the end.
  """
  wd = Workdir(workdir)
  steps = wd.checkpoint_steps_or_raise()
  prepare_data(config)  # on another machine than the training run's, the shards may be new here
  task = make_task(config, wd)
  writer = _writer(wd.file(TEST))
  evaluators = task.evaluators()
  rows, bad = [], []
  for step in steps:
    try:
      state = wd.restore_state(step, task.abstract_state)
    except checkpoints.BadCheckpoint as e:
      bad.append(e)
      print(f"step {step}: skipped, {e}", flush=True)
      continue
    row = {"step": step}
    lines = []
    for eval_name, (evaluator, _) in evaluators.items():
      scores = evaluator(state)
      evaluator.write_summaries(writer, step, state, first=not rows)
      writer.write_scalars(step, _prefixed(eval_name, scores))
      wd.save_per_query(eval_name, step, evaluator.per_query())
      row.update(scores if eval_name == MAIN_EVAL else _prefixed(eval_name, scores))
      lines.append(f"{eval_name}: {evaluator.summary(scores)}")
    rows.append(row)
    print(f"step {step}: " + " || ".join(lines), flush=True)
  writer.flush()
  if not rows:
    raise UserError(f"no checkpoint of {wd.path} could be read: " + "; ".join(str(e) for e in bad))
  path = wd.write_scores(rows)
  if jax.process_index() == 0:
    skipped = f"; skipped {len(bad)} bad: steps {[e.step for e in bad]}" if bad else ""
    print(f"wrote {path} ({len(rows)} checkpoints{skipped})", flush=True)
  return rows
