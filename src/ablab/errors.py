"""Errors a user can cause. The CLI prints their message as one sentence and exits with code 2."""


class UserError(Exception):
    """A mistake in the user's input (config, data, command line) that the user can fix.

    The message is a complete sentence that names the problem and the fix; no traceback is shown.
    """

    exit_code = 2


class ConfigError(UserError):
    """A config file or override that cannot describe a run."""


class DataError(UserError):
    """A corpus that cannot be found, read, downloaded or tokenized."""


class CheckpointError(UserError):
    """No usable checkpoint where one was needed."""
