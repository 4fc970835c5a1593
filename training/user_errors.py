"""User errors versus programming errors at command entry points.

A *user error* is one the person running a command can fix without reading code: a missing or malformed
input file, a config key that does not exist, a damaged checkpoint, data that changed under a run, a
refused operation. Every command reports one as a single line on stderr, ``error: <what is wrong and what
to do>``, and exits with :data:`USER_ERROR_EXIT` (2). Anything else is a programming error and keeps its
traceback (exit 1 from the interpreter); so does a user error when ``DISTILLERY_TRACEBACK=1`` is set.

What counts as a user error:

* :class:`UserError` and its subclasses (new code raises these, or subclasses them);
* classes registered with :func:`register_user_error` (or listed in :data:`_REGISTERED` by their dotted
  name, so that modules defining them need not import this one and this one imports none of them);
* :class:`FileNotFoundError`, :class:`NotADirectoryError`, :class:`IsADirectoryError` and
  :class:`PermissionError`: a command only opens paths it was given or derived from them.

Commands wrap their body once, with :func:`report_user_errors` (or the :func:`user_error_exit` decorator),
instead of catching each error class at each call site.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

USER_ERROR_EXIT = 2
TRACEBACK_ENV = "DISTILLERY_TRACEBACK"

P = ParamSpec("P")


class UserError(Exception):
    """An error the user can fix; its message says what is wrong and what to do, in one line."""


# Existing error classes that describe bad input, registered by dotted name (the module and qualified name
# of the class; subclasses count too).
_REGISTERED: set[str] = {
    "training.data.errors.DataError",
    "training.artifact.ArtifactError",
    "training.model_config.ConfigError",
    "training.kd.trainer.ResumeMismatchError",
    "training.tokenizer.TokenizerMismatchError",
    "training.teachers.base.VocabularyMismatchError",
    "training.teachers.spec.TeacherSpecError",
    "training.teachers.cache_builder.CacheBuildError",
    "training.teachers.token_mapping.TokenMappingError",
    "training.teachers.topk_storage.CacheFormatError",
    "training.reasoning.step_data.StepAlignmentError",
    "training.ops.run_control.RunControlError",
    "training.versions.VersionError",
    "training.ops.queue_daemon.QueueError",
    "training.compare.CompareError",
}
_BUILTIN_USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                                          PermissionError)


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_user_error(cls: type[BaseException]) -> type[BaseException]:
    """Count ``cls`` (and its subclasses) as a user error; usable as a class decorator."""
    _REGISTERED.add(_dotted(cls))
    return cls


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a user error (see the module docstring)."""
    if isinstance(exc, (UserError, *_BUILTIN_USER_ERRORS)):
        return True
    return any(_dotted(cls) in _REGISTERED for cls in type(exc).__mro__)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (an OS error as ``PATH: reason``)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def report_user_errors(body: Callable[[], int]) -> int:
    """Run a command's ``body``; a user error becomes one ``error: ...`` line on stderr and exit code 2.

    Programming errors propagate with their traceback, as do user errors when ``DISTILLERY_TRACEBACK=1``.
    """
    try:
        return body()
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return USER_ERROR_EXIT


def user_error_exit(main: Callable[P, int]) -> Callable[P, int]:
    """Decorate a command's ``main`` with :func:`report_user_errors`."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        return report_user_errors(lambda: main(*args, **kwargs))

    return wrapper
