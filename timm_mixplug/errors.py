"""The one user-facing error type, at the bottom of the import graph (config, datasets, checkpoint use it)."""

__all__ = ['UsageError']


class UsageError(Exception):
    """Bad input from the user: train.py prints one ``train.py: error: ...`` line and exits with code 2."""
