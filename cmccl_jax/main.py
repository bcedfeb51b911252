"""Entry point: `python -m cmccl_jax.main --workdir=exp/NAME [--config=configs/X.py] [--config.a=b]`.

--mode=train       trains into the workdir, resuming from its latest checkpoint.
--mode=evaluate    scores every checkpoint of the workdir with the config saved there.
--mode=sample      (XMC-GAN experiments) writes a PNG grid of samples for the captions
                   given as arguments: `python -m cmccl_jax.main --mode=sample --workdir=exp/NAME -- "a caption"`.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from cmccl_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/X.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory (exp/NAME).", required=True)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "sample"], "What to do.")
_INCEPTION = flags.DEFINE_string(
    "inception", None, "evaluate, XMC-GAN: FID Inception weights (pt_inception-2015-12-05-*.pth); "
    "overrides the config's gan.eval.inception.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 8, "sample: images per caption.")
_STEP = flags.DEFINE_integer("step", -1, "sample: checkpoint step (-1 = the latest).")
_EMA = flags.DEFINE_bool("ema", True, "sample: use the EMA generator (else the raw one).")
_OUT = flags.DEFINE_string("out", "", "sample: PNG path (default exp/NAME/samples/step<S>_<ema|g>_<time>.png).")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() (pods, multi-GPU hosts); on a cluster JAX finds "
    "the processes itself, elsewhere give --coordinator, --num_processes and --process_id.")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "multihost: host:port of process 0 (else JAX's auto-detection).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multihost: the number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multihost: this process's index, 0..num_processes-1.")


def main(argv) -> None:
  if len(argv) > 1 and _MODE.value != "sample":
    raise app.UsageError(f"unexpected arguments {argv[1:]}; overrides look like --config.field=value.")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)  # TFDS/orbax/clu chatter drowns the progress line
  cli.hide_gpus_from_tf()
  # After TF: its start-up notices are held back there, and the modules below import it.
  import jax
  from cmccl_jax import tasks
  from cmccl_jax.errors import UserError
  from cmccl_jax.run import loop
  from cmccl_jax.tasks.xmcgan.task import XmcganTask
  from cmccl_jax.workdir import Workdir

  if _MULTIHOST.value:
    # CPU processes need a collectives backend of their own (GPUs and TPUs bring theirs).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  workdir = Workdir(_WORKDIR.value)
  if _MODE.value == "train":
    config = _CONFIG.value
    if config is None:
      raise app.UsageError("--config is required for --mode=train (train.sh passes configs/default.py).")
    tasks.validate(config)
    loop.train(config, workdir.path)
    return
  config = workdir.load_config()
  if _MODE.value == "sample":
    if config.get("model_type") != "xmcgan":
      raise UserError(f"{workdir.path} is a {config.get('model_type')!r} experiment; only XMC-GAN "
                      "experiments (--config=configs/xmcgan_*.py) can sample images.")
    task = XmcganTask(config, workdir, with_data=False)
    path = task.sample(workdir, list(argv[1:]), num_per_caption=_NUM_SAMPLES.value, step=_STEP.value,
                       ema=_EMA.value, out=_OUT.value)
    print(f"wrote {path}", flush=True)
    return
  if _INCEPTION.value is not None:
    if config.get("model_type") != "xmcgan":
      raise UserError(f"--inception scores generators; {workdir.path} is a {config.get('model_type')!r} "
                      "experiment. Drop the flag.")
    config.gan.eval.inception = _INCEPTION.value
  loop.evaluate_checkpoints(config, workdir.path)


if __name__ == "__main__":
  cli.run(main)
