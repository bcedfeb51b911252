"""The one exception type for input a user can fix: a bad config value, a missing file, a wrong path.

Raised with a message that names the bad value and the fix; the command-line entry
points print it as one line (`cli.run`). Every other exception is a bug and keeps
its traceback.
"""

import errno
import os


class UserError(ValueError):
  """Bad input from the user; the message names the value and how to fix it.

  A ValueError, so code that validates values can be caught as before.
  """


# The write failures a user fixes (disk, quota, permissions), and the fix to name.
WRITE_FIXES = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (quota)",
               errno.EACCES: "make it writable", errno.EPERM: "make it writable",
               errno.EROFS: "use a writable disk"}


def disk_error_code(e: BaseException) -> int | None:
  """The errno of WRITE_FIXES behind `e`, looking through its causes and at the messages of wrappers that
  keep only the text (tensorstore's "[OS error: No space left on device]", TF's ResourceExhaustedError)."""
  chain, cause = [], e
  while cause is not None and cause not in chain:
    chain.append(cause)
    cause = cause.__cause__ or cause.__context__
  for cause in chain:
    for code in WRITE_FIXES:
      if getattr(cause, "errno", None) == code or os.strerror(code) in str(cause):
        return code
  return None
