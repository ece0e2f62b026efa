"""compare's one error type."""

__all__ = ['CompareError']


class CompareError(Exception):
    """Bad input or a refusal: ``compare: error: <message>``, exit code 2, nothing written."""
