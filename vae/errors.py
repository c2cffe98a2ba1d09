"""The one exception type for problems the user can fix (bad input, bad arguments).

Commands catch it and print ``error: <message>`` as one line, exiting with status 2.
:func:`reading` is the one mapping of the errors met opening or reading an input
file to such a line.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class InputError(Exception):
    """A problem with the user's input or arguments, reported as one clear line."""


def input_error(path, exc: BaseException, what: str = "", missing: str = "") -> InputError:
    """The one-line error for ``exc`` met opening or reading the input ``path``.

    ``what`` names what the file should have been (``"not a readable split"``) for
    errors other than missing / a folder / permission / encoding; ``missing`` is a
    hint added to "no such file".
    """
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{path}: no such file{missing}")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{path}: is a directory, not a file")
    if isinstance(exc, PermissionError):
        return InputError(f"{path}: permission denied")
    if isinstance(exc, UnicodeDecodeError):
        return InputError(f"{path}: not a UTF-8 text file")
    if what:
        return InputError(f"{path}: {what} ({exc})")
    return InputError(f"{path}: cannot open ({getattr(exc, 'strerror', None) or exc})")


@contextmanager
def reading(path, what: str = "", missing: str = "", also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Within it, OSError and UnicodeDecodeError (and the ``also`` types) become :func:`input_error` for ``path``."""
    try:
        yield
    except (OSError, UnicodeDecodeError, *also) as e:
        raise input_error(path, e, what, missing) from None
