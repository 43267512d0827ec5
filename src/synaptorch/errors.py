"""Errors caused by what the user asked for, as opposed to bugs.

The command line turns every `SynaptorchError` into one line on stderr and exit code 2.
"""


class SynaptorchError(Exception):
    """Base class of errors that a user can fix by changing their input."""


class ConfigError(SynaptorchError, ValueError):
    """Impossible or inconsistent hyper-parameters, unknown preset."""


class DataError(SynaptorchError):
    """Missing, empty or too short corpus, unusable tokenizer."""


class CheckpointError(SynaptorchError):
    """Missing, corrupt, truncated or foreign checkpoint."""
