"""What every command-line entry point shares: config-flag parsing, quiet native logs, user-facing errors."""

import contextlib
import os
import re
import sys
import tempfile

import logging as py_logging

from absl import app, flags, logging

from cmccl_jax.errors import UserError, disk_error_code


def _config_file_args(argv: list[str]) -> list[str]:
  """The paths of --config=PATH[:args] (config_flags reads PATH as a Python file)."""
  return [a.split("=", 1)[1].split(":", 1)[0] for a in argv[1:] if a.startswith("--config=")]


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with ml_collections' and absl's parse errors turned into one line that names the flag."""
  for path in _config_file_args(argv):
    if not os.path.isfile(path):
      raise SystemExit(f"error: --config={path}: no such file (looked in {os.getcwd()}); the configs are in "
                       "configs/, e.g. --config=configs/default.py.")
  try:
    return flags.FLAGS(argv)
  except flags.IllegalFlagValueError as e:
    # e.g. "flag --config.batch_size=12.5: invalid literal for int() with base 10: '12.5'"
    name = (re.findall(r"flag --([\w.]+)=", str(e)) or [""])[0]
    field = f" ({name} keeps the type of its default in the --config file)" if name.startswith("config.") else ""
    raise SystemExit(f"error: {e}{field}.")
  except (AttributeError, KeyError) as e:
    detail = str(e.args[0]) if e.args else str(e)
    field = (re.findall(r"'([^'\\]+)", detail) or ["?"])[0]
    hint = (re.findall(r"Did you mean [^?]*\?", detail) or [""])[0]
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and field in a.split("=")[0]]
    raise SystemExit(
        " ".join(filter(None, [
            f"error: unknown config field {bad[0] if bad else field!r}: the config has no field {field!r}.", hint,
            "The fields and their defaults are in the --config file (configs/default.py by default)."])))


@contextlib.contextmanager
def native_stderr_captured():
  """Holds back what native code writes to fd 2 meanwhile (TensorFlow's C++ start-up notices: oneDNN,
  "could not find cuda drivers", cuInit), and shows it only if the block fails.

  TF writes these before its log level applies, so TF_CPP_MIN_LOG_LEVEL cannot hide them.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode("utf-8", "replace"))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def hide_gpus_from_tf() -> None:
  """TF only feeds data: leave every accelerator to JAX, and keep TF's start-up notices off the screen."""
  with native_stderr_captured():
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
    tf.constant(0)  # initialises TF's devices (the cuInit notice) while fd 2 is held back


class _DiskErrorsReportedOnce(py_logging.Filter):
  """Drops the tracebacks library threads log for a full or read-only disk (orbax's save, clu's event
  writer): the run stops on the same failure with one line naming the path and the fix."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return not (record.exc_info and record.exc_info[1] is not None and disk_error_code(record.exc_info[1]))


def run(main) -> None:
  """app.run(main), printing a UserError as one line (exit 2); any other exception keeps its traceback."""
  logging.get_absl_handler().addFilter(_DiskErrorsReportedOnce())
  try:
    app.run(main, flags_parser=parse_flags)
  except UserError as e:
    if os.environ.get("CMCCL_TRACEBACK"):
      raise
    print(f"error: {e}\n(set CMCCL_TRACEBACK=1 for the full traceback)", file=sys.stderr)
    sys.exit(2)
