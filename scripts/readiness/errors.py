"""The error type for usage, configuration and tool problems."""


class ReadinessError(Exception):
    """The assessment could not be made (bad usage, unreadable input, a tool crashed): exit code 2."""


def not_text(exc: UnicodeDecodeError) -> str:
    """One line saying why a file is not UTF-8 text, e.g. ``not UTF-8 text (byte 0xff at offset 1)``."""
    byte = exc.object[exc.start : exc.start + 1]
    shown = f"byte 0x{byte.hex()}" if byte else "truncated character"
    return f"not UTF-8 text ({shown} at offset {exc.start}; a binary file?)"
