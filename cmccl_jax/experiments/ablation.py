"""The curriculum ablation: baseline vs curriculum variants × seeds at equal steps, one command.

  bash ablate.sh [NAME] [--variants=baseline,root,...] [--seeds=0,1,2] [--config.x=y ...]

Every (variant, seed) trains `configs/ablation.py` (plus overrides) into
exp/NAME/<variant>/seed<s>, seed-major so machine drift hits all variants alike;
finished runs are skipped, so a killed ablation resumes. Then it writes
  results.md       final and best R@1/R@5 in both directions, mean ± std over seeds ("best": the
                   test value at the eval step with the best validation value, so no
                   number is chosen by looking at the test split);
                   median train step time per variant and its ratio to the baseline;
                   Spearman of every scorer the runs read with the synthetic ground truth
  r1_vs_step.png   t2i and i2t R@1 against step, mean with a ±1 std band per variant
  results.json     the same numbers, machine-readable
"""

import json
import os

import numpy as np
from absl import flags
from ml_collections import config_flags

from cmccl_jax import cli
from cmccl_jax.curriculum import analysis
from cmccl_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ablation.py", "Base config of every run.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "exp/ablation", "Where the runs and the results go.")
_VARIANTS = flags.DEFINE_list("variants", ["baseline", "root", "phases", "anti", "random"], "Variants to run.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds per variant.")

# Each variant is the base config with these curriculum fields; the baseline shows all data uniformly.
VARIANTS = {
    "baseline": dict(pacing="none"),
    "root": dict(pacing="root", order="easy_first"),
    "linear": dict(pacing="linear", order="easy_first"),
    "geometric": dict(pacing="geometric", order="easy_first"),
    "soft_root": dict(pacing="root", order="easy_first", soft=True),
    "phases": dict(pacing="phases", order="easy_first"),
    "disjoint_phases": dict(pacing="disjoint_phases", order="easy_first"),
    "anti": dict(pacing="root", order="hard_first"),
    "random": dict(pacing="root", order="random"),
}
METRICS = ("t2i/R@1", "t2i/R@5", "i2t/R@1", "i2t/R@5")
# The evaluator every run gets for model selection, beside the main one ("eval", the test split).
VALIDATION = "val"


def variant_config(base, variant: str, seed: int):
  if variant not in VARIANTS:
    raise UserError(f"unknown ablation variant {variant!r}; known: {', '.join(VARIANTS)}.")
  config = base.copy_and_resolve_references()
  with config.unlocked():
    config.seed = seed
    config.curriculum.update(VARIANTS[variant])
    if "evals" in config and VALIDATION not in config.evals:
      config.evals[VALIDATION] = {"kind": "retrieval", "split": "validation", "every_steps": 0}
  return config


def run_history(records: list[dict]) -> tuple[dict[int, dict], dict[int, dict], list[float]]:
  """({eval step: test metrics}, {eval step: validation metrics}, train step times in ms) from a run's
  metrics.jsonl (the last record of a step wins)."""
  evals: dict[int, dict] = {}
  vals: dict[int, dict] = {}
  times: dict[int, float] = {}
  for r in records:
    for prefix, out in (("eval/", evals), (f"{VALIDATION}/", vals)):
      metrics = {k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}
      if metrics:
        out[r["step"]] = metrics
    if "step_time_ms" in r:
      times[r["step"]] = r["step_time_ms"]
  return evals, vals, [times[s] for s in sorted(times)]


def summarise(histories: dict[str, list[dict[int, dict]]],
              validation: dict[str, list[dict[int, dict]]]) -> dict[str, dict[str, tuple[float, float]]]:
  """{variant: {"final <m>"/"best <m>": (mean, std over seeds)}}; "best" is the test value at the step
  whose validation value of the same metric is highest (the earliest of ties)."""
  table = {}
  for variant, runs in histories.items():
    row = {}
    for metric in METRICS:
      finals = [run[max(run)][metric] for run in runs]
      bests = []
      for run, val in zip(runs, validation[variant]):
        steps = sorted(set(run) & set(val))
        if not steps:
          raise UserError(f"the {variant} runs have no validation evals ({VALIDATION}/...); delete and rerun "
                          "them so that each step is scored on the validation split too.")
        best_step = max(steps, key=lambda s: (val[s][metric], -s))
        bests.append(run[best_step][metric])
      row[f"final {metric}"] = (float(np.mean(finals)), float(np.std(finals)))
      row[f"best {metric}"] = (float(np.mean(bests)), float(np.std(bests)))
    table[variant] = row
  return table


def markdown(table, step_times, correlations, seeds, base) -> str:
  columns = [f"{kind} {m}" for m in METRICS for kind in ("final", "best")]
  lines = [f"Curriculum ablation: {len(seeds)} seeds ({', '.join(map(str, seeds))}), {base.num_steps} steps, "
           f"batch {base.batch_size}, scorer `{base.curriculum.scorer}`, corrupt_fraction "
           f"{base.data.synthetic.corrupt_fraction}. R@K in %, mean ± std over seeds.", "",
           "| variant | " + " | ".join(columns) + " | step ms | vs baseline |",
           "|---" * (len(columns) + 3) + "|"]
  base_time = step_times.get("baseline")
  for variant, row in table.items():
    cells = [f"{row[c][0]:.2f} ± {row[c][1]:.2f}" for c in columns]
    t = step_times.get(variant)
    ratio = f"{t / base_time:.3f}" if t and base_time else "—"
    lines.append(f"| {variant} | " + " | ".join(cells) + f" | {t:.1f} | {ratio} |" if t else
                 f"| {variant} | " + " | ".join(cells) + " | — | — |")
  if correlations:
    lines += ["", "Spearman correlation of each scorer with the ground-truth complexity (training split):", "",
              "| scorer | Spearman ρ |", "|---|---|"]
    lines += [f"| {name} | {rho:.3f} |" for name, rho in correlations.items()]
  return "\n".join(lines) + "\n"


def plot(histories, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
  for ax, metric in zip(axes, ("t2i/R@1", "i2t/R@1")):
    for variant, runs in histories.items():
      steps = sorted(set.intersection(*(set(r) for r in runs)))
      values = np.asarray([[run[s][metric] for s in steps] for run in runs])
      mean, std = values.mean(0), values.std(0)
      ax.plot(steps, mean, marker="o", label=variant)
      ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_title(f"{metric} (mean ± std over seeds)")
    ax.set_xlabel("step")
    ax.set_ylabel("%")
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


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
  seeds = [int(s) for s in _SEEDS.value]
  variants = list(_VARIANTS.value)
  for variant in variants:
    variant_config(base, variant, 0)  # unknown names fail before any training
  root = _WORKDIR.value
  os.makedirs(root, exist_ok=True)
  histories: dict[str, list] = {v: [] for v in variants}
  validation: dict[str, list] = {v: [] for v in variants}
  times: dict[str, list] = {v: [] for v in variants}
  for seed in seeds:
    for variant in variants:
      config = variant_config(base, variant, seed)
      tasks.validate(config)
      workdir = Workdir(os.path.join(root, variant, f"seed{seed}"))
      evals, vals, step_times = run_history(workdir.read_metrics())
      if int(config.num_steps) not in evals:
        print(f"== {variant} seed {seed} -> {workdir.path}", flush=True)
        loop.train(config, workdir.path)
        evals, vals, step_times = run_history(workdir.read_metrics())
      histories[variant].append(evals)
      validation[variant].append(vals)
      times[variant].extend(step_times[1:])  # the first interval includes warm-up
  table = summarise(histories, validation)
  step_times = {v: float(np.median(t)) for v, t in times.items() if t}
  builder = datasets.get_builder(base.data)
  run_difficulty = difficulty.load_run_difficulty(base, builder, Curriculum.from_config(base.curriculum, 0))
  correlations = (scorer_correlations(builder, run_difficulty.table) if "complexity" in builder.info.features
                  else {})
  text = markdown(table, step_times, correlations, seeds, base)
  with open(os.path.join(root, "results.md"), "w") as f:
    f.write(text)
  plot(histories, os.path.join(root, "r1_vs_step.png"))
  with open(os.path.join(root, "results.json"), "w") as f:
    json.dump({"table": table, "step_time_ms": step_times, "spearman_with_ground_truth": correlations,
               "histories": {v: [{str(s): e for s, e in run.items()} for run in runs] for v, runs in histories.items()}},
              f, indent=1)
  print(text + f"\nwrote {root}/results.md, r1_vs_step.png, results.json", flush=True)


if __name__ == "__main__":
  cli.run(main)
