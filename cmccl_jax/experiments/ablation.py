"""The curriculum ablation: variants × seeds at equal steps, with conclusions that can stand, one command.

  bash ablate.sh [NAME] [--variants=baseline,root,...] [--seeds=0,1,2,3,4] [--config.x=y ...]

The variants, seeds, metric and sweeps are `config.ablation` (configs/ablation.py).
Every (variant, seed) trains the base config with the variant's overrides into
exp/NAME/<variant>/seed<s>, seed-major so machine drift hits all variants alike;
finished runs are skipped and a killed one resumes, so it can be run in parts. Then
the baseline and the best variants on validation are trained at the other corrupt
fractions (exp/NAME/corrupt<f>/<variant>/seed<s>), and it writes
  results.md        per variant, the metric at the last step and at the step chosen on
                    validation, mean and 95% t interval over seeds; the paired difference
                    from the baseline (same seeds): its t interval, paired t-test p and a
                    bootstrap interval over seeds and test queries; steps and train time
                    to reach the target; final metric against corrupt fraction; step time
  curves.png        the metric against step, mean and 95% band per variant
  paired.png        the differences from the baseline with both intervals
  convergence.png   steps to the target per variant
  robustness.png    the final metric against corrupt fraction
  results.json      the same numbers, machine-readable
"""

import json
import os
import time

import numpy as np
from absl import flags
from ml_collections import config_flags

from cmccl_jax import cli
from cmccl_jax.curriculum import analysis
from cmccl_jax.errors import UserError
from cmccl_jax.experiments import statistics

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ablation.py", "Base config of every run.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "exp/ablation", "Where the runs and the results go.")
_VARIANTS = flags.DEFINE_list("variants", [], "Variants to run (default: config.ablation.run).")
_SEEDS = flags.DEFINE_list("seeds", [], "Seeds per variant (default: config.ablation.seeds).")
_RECORDS = flags.DEFINE_string("records", "", "Where each finished run's record goes (default WORKDIR/records); "
                               "a run with a record is not trained again, even without its workdir.")
_PARTIAL = flags.DEFINE_bool("partial", False, "Train nothing: write the results of the finished records only "
                             "(the seeds every variant has finished), marked as partial.")

BASELINE = "baseline"
COST = "cost.json"  # in a record: {"train_seconds": how long its training took}
# A variant's string field with this value names the teacher run's workdir (config.ablation.teacher).
TEACHER = "{teacher}"
# The evaluator every run gets for model selection, beside the main one ("eval", the test split).
VALIDATION = "val"
MAIN = "eval"


def _merge(node, overrides: dict) -> None:
  for key, value in overrides.items():
    if isinstance(value, dict) and key in node:
      _merge(node[key], value)
    else:
      node[key] = value


def _teacher_fields(overrides: dict, prefix: str = "") -> list[str]:
  out = []
  for key, value in overrides.items():
    if isinstance(value, dict):
      out += _teacher_fields(value, f"{prefix}{key}.")
    elif value == TEACHER:
      out.append(prefix + key)
  return out


def needs_teacher(base, variant: str) -> bool:
  """Whether `variant` names the teacher run (a field set to "{teacher}")."""
  return bool(_teacher_fields(base.ablation.variants[variant].to_dict()))


def variant_config(base, variant: str, seed: int, corrupt_fraction: float | None = None, teacher: str = ""):
  """The base config with `variant`'s overrides, `seed`, a validation evaluator and, if given, the noise;
  fields set to "{teacher}" become `teacher`, the teacher run's workdir."""
  variants = base.ablation.variants
  if variant not in variants:
    raise UserError(f"unknown ablation variant {variant!r}; known: {', '.join(variants)} (config.ablation.variants).")
  overrides = variants[variant].to_dict()
  config = base.copy_and_resolve_references()
  with config.unlocked():
    config.seed = seed
    _merge(config, overrides)
    for field in _teacher_fields(overrides):
      if not teacher:
        raise ValueError(f"variant {variant!r} needs its teacher run's workdir for config.{field}")
      *parents, leaf = field.split(".")
      node = config
      for key in parents:
        node = node[key]
      node[leaf] = teacher
    if corrupt_fraction is not None:
      config.data.synthetic.corrupt_fraction = float(corrupt_fraction)
    if VALIDATION not in config.evals:
      config.evals[VALIDATION] = {"kind": "retrieval", "split": "validation", "every_steps": 0}
  return config


def run_history(records: list[dict]) -> tuple[dict[int, dict], dict[int, dict], list[float]]:
  """({eval step: test metrics}, {eval step: validation metrics}, train step times in ms) from a run's
  metrics.jsonl (the last record of a step wins)."""
  evals: dict[int, dict] = {}
  vals: dict[int, dict] = {}
  times: dict[int, float] = {}
  for r in records:
    for prefix, out in ((f"{MAIN}/", evals), (f"{VALIDATION}/", vals)):
      metrics = {k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}
      if metrics:
        out[r["step"]] = metrics
    if "step_time_ms" in r:
      times[r["step"]] = r["step_time_ms"]
  return evals, vals, [times[s] for s in sorted(times)]


def per_query_values(arrays: dict, metric: str) -> np.ndarray | None:
  """Each test query's share of `metric` (its mean is the metric), from an evaluation's per-query file."""
  prefix, _, name = metric.rpartition("/")
  if name.startswith("R@") and f"{prefix}/first_rank" in arrays:
    return 100.0 * (arrays[f"{prefix}/first_rank"] <= int(name[2:]))
  if name == "mAP" and f"{prefix}/ap" in arrays:
    return 100.0 * arrays[f"{prefix}/ap"]
  return None


class Run:
  """One finished (variant, seed, corrupt fraction) run, read back from its workdir."""

  def __init__(self, workdir, metric: str, num_steps: int):
    self.evals, self.vals, times = run_history(workdir.read_metrics())
    if num_steps not in self.evals:
      raise UserError(f"{workdir.path} has no evaluation at its last step {num_steps}; run ablate.sh again")
    if metric not in self.evals[num_steps]:
      raise UserError(f"config.ablation.metric={metric!r} is not among the evaluation's metrics "
                      f"({', '.join(sorted(self.evals[num_steps])[:8])}, ...); pick one of them")
    self.curve = {s: e[metric] for s, e in self.evals.items()}
    self.final = self.curve[num_steps]
    steps = sorted(set(self.evals) & set(self.vals))
    if not steps:
      raise UserError(f"{workdir.path} has no validation evals ({VALIDATION}/...); delete it and run again")
    best = max(steps, key=lambda s: (self.vals[s][metric], -s))  # the earliest of ties
    self.selected, self.selected_step, self.validation = self.curve[best], best, self.vals[best][metric]
    self.step_ms = float(np.median(times[1:])) if len(times) > 1 else float("nan")  # the first holds warm-up
    self.queries = per_query_values(workdir.load_per_query(MAIN, num_steps), metric)


def _interval(values) -> dict:
  mean, low, high = statistics.mean_ci(values)
  return {"mean": mean, "low": low, "high": high, "n": len(values)}


def summarise(runs: dict[str, list[Run]], target: float) -> dict[str, dict]:
  """Per variant: final and selected metric, paired comparison with the baseline, convergence."""
  table = {}
  baseline = runs.get(BASELINE)
  for variant, rs in runs.items():
    row = {"final": _interval([r.final for r in rs]), "selected": _interval([r.selected for r in rs]),
           "validation": float(np.mean([r.validation for r in rs])),
           "step_ms": float(np.median([r.step_ms for r in rs]))}
    reached = [statistics.steps_to_target(r.curve, target) for r in rs]
    steps = [s for s in reached if s is not None]
    row["to_target"] = {"reached": len(steps), "of": len(rs), **(_interval(steps) if steps else {})}
    if steps:
      row["to_target"]["seconds"] = float(np.mean(steps)) * row["step_ms"] / 1000
    if baseline is not None and variant != BASELINE:
      row["vs_baseline"] = statistics.paired_t([r.final for r in rs], [r.final for r in baseline])
      if all(r.queries is not None for r in rs + baseline):
        row["vs_baseline"]["bootstrap"] = statistics.paired_bootstrap([r.queries for r in rs],
                                                                       [r.queries for r in baseline])
    table[variant] = row
  return table


def _ci(cell: dict) -> str:
  if np.isnan(cell.get("low", np.nan)):
    return f"{cell['mean']:.2f}"
  return f"{cell['mean']:.2f} [{cell['low']:.2f}, {cell['high']:.2f}]"


def markdown(table, robustness, correlations, settings, base, seeds, target, cost_s, teacher=None, note="") -> str:
  metric = settings.metric
  lines = [
      f"# Curriculum ablation on `{metric}`", "",
      f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), {base.num_steps} steps, batch {base.batch_size}, "
      f"scorer `{base.curriculum.scorer}`, corrupt_fraction {base.data.synthetic.corrupt_fraction}. Values in %: "
      "mean [95% t interval over seeds]. *final*: at the last step; *selected*: at the step with the best "
      "validation value (nothing is chosen on the test split). *Δ vs baseline*: the paired per-seed "
      "difference of the final values, with its t interval, the paired t-test's p, and a bootstrap "
      "interval that resamples seeds and test queries. *To target*: steps (and train seconds) until "
      f"the run first reaches {target:.2f} ({settings.target_fraction:g} × the baseline's mean final), "
      f"interpolated between evaluations; *reached*: runs that did. Wall time of the whole ablation: "
      f"{cost_s / 3600:.2f} h (train time of every run, summed).", ""]
  if note:
    lines += [note.strip(), ""]
  if teacher is not None:
    lines += [f"The distilling variants learn from the towers of a teacher run (`{settings.teacher.variant}`, seed "
              f"{settings.teacher.seed}, same data; final {teacher.final:.2f}, selected {teacher.selected:.2f}).", ""]
  lines += [
      "| variant | final | selected | Δ vs baseline | p | bootstrap Δ | to target: steps | s | reached | step ms |",
      "|---|---|---|---|---|---|---|---|---|---|"]
  for variant, row in table.items():
    vs = row.get("vs_baseline")
    delta = _ci(vs) if vs else "—"
    p = f"{vs['p']:.3f}" if vs and not np.isnan(vs["p"]) else "—"
    boot = f"[{vs['bootstrap'][0]:.2f}, {vs['bootstrap'][1]:.2f}]" if vs and "bootstrap" in vs else "—"
    t = row["to_target"]
    steps = _ci(t) if t["reached"] else "—"
    secs = f"{t['seconds']:.0f}" if "seconds" in t else "—"
    lines.append(f"| {variant} | {_ci(row['final'])} | {_ci(row['selected'])} | {delta} | {p} | {boot} | {steps} | "
                 f"{secs} | {t['reached']}/{t['of']} | {row['step_ms']:.1f} |")
  if robustness:
    fractions = sorted({f for cells in robustness.values() for f in cells})
    lines += ["", f"Robustness: final `{metric}` against the fraction of corrupted training pairs (the baseline "
              "and the best variants on validation).", "",
              "| variant | " + " | ".join(f"corrupt {f:g}" for f in fractions) + " |",
              "|---" * (len(fractions) + 1) + "|"]
    for variant, cells in robustness.items():
      lines.append(f"| {variant} | " + " | ".join(_ci(cells[f]) if f in cells else "—" for f in fractions) + " |")
  if correlations:
    lines += ["", "Spearman correlation of each scorer with the ground-truth complexity (training split):", "",
              "| scorer | Spearman ρ |", "|---|---|"]
    lines += [f"| {name} | {rho:.3f} |" for name, rho in correlations.items()]
  return "\n".join(lines) + "\n"


def _figure(path: str, draw, title: str, xlabel: str, ylabel: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.2))
  draw(ax)
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plots(root: str, runs, table, robustness, metric: str, target: float) -> None:
  def curves(ax):
    for variant, rs in runs.items():
      steps = sorted(set.intersection(*(set(r.curve) for r in rs)))
      cells = [statistics.mean_ci([r.curve[s] for r in rs]) for s in steps]
      mean = np.array([c[0] for c in cells])
      ax.plot(steps, mean, marker="o", label=variant)
      if len(rs) > 1:
        ax.fill_between(steps, [c[1] for c in cells], [c[2] for c in cells], alpha=0.15)
    ax.axhline(target, color="grey", linestyle=":", label="target")

  def paired(ax):
    rows = [(v, r["vs_baseline"]) for v, r in table.items() if "vs_baseline" in r]
    for k, (variant, vs) in enumerate(rows):
      ax.errorbar(vs["mean"], k, xerr=[[vs["mean"] - vs["low"]], [vs["high"] - vs["mean"]]], fmt="o", capsize=4,
                  color="C0", label="t interval over seeds" if k == 0 else None)
      if "bootstrap" in vs:
        low, high = vs["bootstrap"]
        ax.plot([low, high], [k + 0.15] * 2, color="C1", linewidth=3,
                label="bootstrap (seeds × queries)" if k == 0 else None)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [v for v, _ in rows])

  def convergence(ax):
    names = list(table)
    means = [table[v]["to_target"].get("mean", np.nan) for v in names]
    errs = [[m - table[v]["to_target"].get("low", m) for v, m in zip(names, means)],
            [table[v]["to_target"].get("high", m) - m for v, m in zip(names, means)]]
    ax.bar(names, means, yerr=np.nan_to_num(errs), capsize=4)
    for k, v in enumerate(names):
      t = table[v]["to_target"]
      ax.annotate(f"{t['reached']}/{t['of']}", (k, 0), ha="center", va="bottom", fontsize=8)

  def noise(ax):
    for variant, cells in robustness.items():
      fractions = sorted(cells)
      mean = [cells[f]["mean"] for f in fractions]
      err = np.nan_to_num([[cells[f]["mean"] - cells[f]["low"] for f in fractions],
                           [cells[f]["high"] - cells[f]["mean"] for f in fractions]])
      ax.errorbar(fractions, mean, yerr=err, marker="o", capsize=4, label=variant)

  _figure(os.path.join(root, "curves.png"), curves, f"{metric}: mean and 95% band over seeds", "step", "%")
  _figure(os.path.join(root, "paired.png"), paired, f"final {metric}: variant − baseline (95% intervals)",
          "difference (points of %)", "")
  _figure(os.path.join(root, "convergence.png"), convergence, f"steps until {metric} ≥ {target:.2f} (runs that did)",
          "variant", "step")
  if robustness:
    _figure(os.path.join(root, "robustness.png"), noise, f"final {metric} against label noise", "corrupt fraction",
            "%")


def scorer_correlations(builder, table) -> dict[str, float]:
  """Spearman of every offline scorer the runs read (`table`, a difficulty.ScoreTable) with the generator's
  complexity, over the training split."""
  import tensorflow_datasets as tfds

  ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
  ids, complexity = [], []
  for batch in ds.map(lambda ex: (ex["id"], ex["complexity"])).batch(4096).as_numpy_iterator():
    ids.append(batch[0])
    complexity.append(batch[1])
  ids, complexity = np.concatenate(ids), np.concatenate(complexity)
  complexity = complexity[np.argsort(ids, kind="stable")]  # the table's ids are sorted
  train_ids, columns = table.split("train")
  if not np.array_equal(np.sort(ids), train_ids):
    raise ValueError("the difficulty scores cover other training examples than the image shards")
  return {name: float(analysis.spearman(v, complexity)) for name, v in sorted(columns.items())}


def main(argv) -> None:
  del argv
  from absl import logging
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)
  cli.hide_gpus_from_tf()
  # After TF: its start-up notices are held back there, and the modules below import it.
  from cmccl_jax import tasks
  from cmccl_jax.curriculum.curriculum import Curriculum
  from cmccl_jax.data import datasets, difficulty
  from cmccl_jax.run import loop
  from cmccl_jax.workdir import Workdir

  base = _CONFIG.value
  if "ablation" not in base:
    raise UserError("the config has no `ablation` block (variants, seeds, metric); start from "
                    "configs/ablation.py or add `c.ablation = configs.ablation.settings()`")
  settings = base.ablation
  seeds = [int(s) for s in (_SEEDS.value or settings.seeds)]
  variants = list(_VARIANTS.value or settings.run)
  for variant in variants:
    variant_config(base, variant, 0, teacher=TEACHER)  # unknown names fail before any training
  if BASELINE not in variants:
    raise UserError(f"--variants must include {BASELINE!r}: every comparison is paired with it")
  root = _WORKDIR.value
  os.makedirs(root, exist_ok=True)
  base_noise = float(base.data.synthetic.corrupt_fraction)
  num_steps, metric = int(base.num_steps), settings.metric

  records = _RECORDS.value or os.path.join(root, "records")
  ignored = ("evals.", "eval_batch_size", "log_every_steps", "ablation.")

  def check_same(workdir, config, where: str) -> None:
    # A finished run is reused only if it is this run: same config up to the evaluation schedule.
    changed = {k: v for k, v in workdir.config_changes(config, tasks.added_fields(config)).items()
               if not k.startswith(ignored)}
    if changed:
      raise UserError(f"{where} holds a finished run of another config ("
                      + "; ".join(f"config.{k}: {a} -> {b}" for k, (a, b) in sorted(changed.items())[:4])
                      + "); give this ablation another NAME, or move that folder away")

  def train(config, where: str, label: str) -> tuple[Workdir, float | None]:
    """(the finished run's workdir, its train seconds if trained now)."""
    workdir = Workdir(where)
    if num_steps in run_history(workdir.read_metrics())[0]:
      check_same(workdir, config, where)
      return workdir, None
    tasks.validate(config)
    print(f"== {label} -> {where}", flush=True)
    t0 = time.time()
    loop.train(config, where)
    return workdir, time.time() - t0

  def where_of(name: str, seed: int | None, noise: float) -> str:
    parts = ([] if noise == base_noise else [f"corrupt{noise:g}"]) + [name] + ([] if seed is None else [f"seed{seed}"])
    return os.path.join(*parts)

  def teacher(noise: float) -> str:
    """The teacher run's workdir at `noise`, trained (to its checkpoint: the features come from it) if missing."""
    spec = settings.teacher
    rel = where_of("teacher", None, noise)
    config = variant_config(base, spec.variant, int(spec.seed), noise)
    workdir, seconds = train(config, os.path.join(root, rel),
                             f"teacher ({spec.variant} seed {spec.seed}) corrupt {noise:g}")
    save_record(workdir, Workdir(os.path.join(records, rel)), metric, num_steps, seconds)
    return workdir.path

  def run(variant: str, seed: int, noise: float) -> Run | None:
    rel = where_of(variant, seed, noise)
    where, record = os.path.join(root, rel), Workdir(os.path.join(records, rel))
    teacher_dir = os.path.join(root, where_of("teacher", None, noise)) if needs_teacher(base, variant) else ""
    config = variant_config(base, variant, seed, noise, teacher_dir)
    if num_steps in run_history(record.read_metrics())[0]:
      check_same(record, config, record.path)
    elif _PARTIAL.value:
      return None
    else:
      if teacher_dir:
        teacher(noise)
      workdir, seconds = train(config, where, f"{variant} seed {seed} corrupt {noise:g}")
      save_record(workdir, record, metric, num_steps, seconds)
    return Run(record, metric, num_steps)

  runs = {v: [] for v in variants}
  for seed in seeds:
    for variant in variants:
      runs[variant].append(run(variant, seed, base_noise))
  all_seeds = list(seeds)
  if _PARTIAL.value:  # the seeds every variant has finished
    done = [i for i in range(len(seeds)) if all(runs[v][i] is not None for v in variants)]
    if not done:
      raise UserError(f"no seed of {seeds} is finished for every variant in {records}; run ablate.sh without "
                      "--partial first")
    runs = {v: [rs[i] for i in done] for v, rs in runs.items()}
    seeds = [seeds[i] for i in done]
  baseline_final = float(np.mean([r.final for r in runs[BASELINE]]))
  target = settings.target_fraction * baseline_final
  table = summarise(runs, target)

  # Robustness: the baseline and the best variants, picked on validation only.
  ranked = sorted((v for v in variants if v != BASELINE), key=lambda v: -table[v]["validation"])
  swept = [BASELINE] + ranked[:int(settings.robustness_top)]
  robustness = {v: {base_noise: table[v]["final"]} for v in swept}
  for noise in (float(f) for f in settings.corrupt_fractions):
    if noise == base_noise:
      continue
    finals = {v: [] for v in swept}
    for seed in seeds:
      for variant in swept:
        r = run(variant, seed, noise)
        if r is not None:
          finals[variant].append(r.final)
    for variant in swept:
      if finals[variant]:
        robustness[variant][noise] = _interval(finals[variant])

  builder = datasets.get_builder(base.data)
  run_difficulty = difficulty.load_run_difficulty(base, builder, Curriculum.from_config(base.curriculum, 0))
  correlations = (scorer_correlations(builder, run_difficulty.table) if "complexity" in builder.info.features
                  else {})
  cost, untimed = _cost(records)
  note = ""
  if _PARTIAL.value:
    note = (f"**Partial**: {len(seeds)} of {len(all_seeds)} seeds finished for every variant "
            f"(`--partial`); the robustness cells hold the runs finished so far (n in results.json).")
  if untimed:
    note += f" {untimed} runs have no recorded train time; the wall time counts the others."
  taught = any(needs_teacher(base, v) for v in variants)
  teacher_run = Run(Workdir(os.path.join(records, "teacher")), metric, num_steps) if taught else None
  text = markdown(table, robustness, correlations, settings, base, seeds, target, cost, teacher_run, note)
  with open(os.path.join(root, "results.md"), "w") as f:
    f.write(text)
  plots(root, runs, table, robustness, metric, target)
  with open(os.path.join(root, "results.json"), "w") as f:
    json.dump({"metric": metric, "target": target, "table": table, "cost_s": cost,
               "robustness": {v: {str(k): c for k, c in cells.items()} for v, cells in robustness.items()},
               "spearman_with_ground_truth": correlations,
               "curves": {v: [{str(s): x for s, x in r.curve.items()} for r in rs] for v, rs in runs.items()}},
              f, indent=1)
  print(text + f"\nwrote {root}/results.md, curves.png, paired.png, convergence.png, robustness.png, results.json",
        flush=True)


def save_record(workdir, record, metric: str, num_steps: int, seconds: float | None = None) -> None:
  """What the results need of a finished run, small enough to keep (commit) without its checkpoints: the
  config, the evaluation and step-time records of metrics.jsonl, and the final per-query values of `metric`."""
  from cmccl_jax.workdir import config_json_text
  os.makedirs(record.path, exist_ok=True)
  with open(record.file("config.json"), "w") as f:
    f.write(config_json_text(workdir.file("config.json")))
  keep = (f"{MAIN}/", f"{VALIDATION}/")
  lines = []
  for r in workdir.read_metrics():
    kept = {k: v for k, v in r.items() if k in ("step", "step_time_ms") or k.startswith(keep)}
    if len(kept) > 1:
      lines.append(json.dumps(kept) + "\n")
  prefix = metric.rpartition("/")[0] + "/"
  arrays = {k: v for k, v in workdir.load_per_query(MAIN, num_steps).items() if k.startswith(prefix)}
  if arrays:  # before metrics.jsonl: a record with its final evaluation is complete
    path = record.per_query_file(MAIN, num_steps)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **arrays)
  if seconds is not None:
    with open(record.file(COST), "w") as f:
      json.dump({"train_seconds": seconds}, f)
  with open(record.file("metrics.jsonl") + ".tmp", "w") as f:
    f.writelines(lines)
  os.replace(record.file("metrics.jsonl") + ".tmp", record.file("metrics.jsonl"))


def _cost(records: str) -> tuple[float, int]:
  """(train seconds summed over every finished run's record, how many finished records have no timing)."""
  total, untimed = 0.0, 0
  for folder, _, files in os.walk(records):
    if "metrics.jsonl" in files:
      if COST in files:
        total += json.load(open(os.path.join(folder, COST)))["train_seconds"]
      else:
        untimed += 1
  return total, untimed


if __name__ == "__main__":
  cli.run(main)
