"""What every command-line entry point shares: config-flag parsing and user-facing errors."""

import os
import re
import sys

from absl import app, flags


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with ml_collections' unknown-field error turned into a message that names the flag."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    detail = str(e.args[0]) if e.args else str(e)
    field = (re.findall(r"'([^'\\]+)", detail) or ["?"])[0]
    hint = (re.findall(r"Did you mean [^?]*\?", detail) or [""])[0]
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and field in a.split("=")[0]]
    raise SystemExit(
        " ".join(filter(None, [
            f"error: unknown config field {bad[0] if bad else field!r}: the config has no field {field!r}.", hint,
            "The fields and their defaults are in the --config file (configs/default.py by default)."])))


def run(main) -> None:
  """app.run(main), printing the errors a user can fix (bad values, missing files) as one line, exit 2."""
  try:
    app.run(main, flags_parser=parse_flags)
  except (ValueError, FileNotFoundError) as e:
    if os.environ.get("CMCCL_TRACEBACK"):
      raise
    print(f"error: {e}\n(set CMCCL_TRACEBACK=1 for the full traceback)", file=sys.stderr)
    sys.exit(2)
