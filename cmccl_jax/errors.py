"""The one exception type for input a user can fix: a bad config value, a missing file, a wrong path.

Raised with a message that names the bad value and the fix; the command-line entry
points print it as one line (`cli.run`). Every other exception is a bug and keeps
its traceback.
"""


class UserError(ValueError):
  """Bad input from the user; the message names the value and how to fix it.

  A ValueError, so code that validates values can be caught as before.
  """
