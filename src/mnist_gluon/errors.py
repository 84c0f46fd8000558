"""One error type per kind of user mistake (the CLI prints each as one line, exit status 2),
and the ways a run ends early: interrupted, stopped by a signal, diverged."""


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""


class ConfigError(UserError):
    """A config file, key or value is wrong."""


class DataError(UserError):
    """A data file is missing, unreadable, malformed or fails its checksum."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or does not match what it claims to be."""


class DeviceError(UserError):
    """A device was asked for that this machine does not have."""


class OutputError(UserError):
    """The output folder cannot be written, or writing would overwrite a run."""


class Interrupted(Exception):
    """The user stopped a run (Ctrl-C); the message says what was kept. Exit status 130."""


class Stopped(Exception):
    """SIGINT or SIGTERM stopped a run after a checkpoint; exit 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum


class Diverged(Exception):
    """The loss or a gradient stopped being finite; the message names the step and the last
    good checkpoint. Exit status 1."""
