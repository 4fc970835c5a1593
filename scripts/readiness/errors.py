"""The error type for usage, configuration and tool problems."""


class ReadinessError(Exception):
    """The assessment could not be made (bad usage, unreadable input, a tool crashed): exit code 2."""
