"""How the process talks: TensorFlow imported quietly, and ``--quiet`` meaning nothing but errors.

TensorFlow is imported here and only here (``ruff`` bans ``import tensorflow``
and ``import keras`` elsewhere in ``vae/``; call :func:`import_tensorflow` or
:func:`import_keras`). Its C++ logging is turned down before the import
(``TF_CPP_MIN_LOG_LEVEL=2``: errors only) unless the user set the variable.
TensorFlow prints a few start-up lines during the import that ignore that
variable (absl's "All log messages before absl::InitializeLog()", oneDNN,
cpu_feature_guard), so the first import runs with file descriptor 2 captured
and replays only the lines at or above the level in force.

:func:`quiet_stderr` is what ``--quiet`` does for every command (``vae.cli.run``):
Python-level stderr (progress bars, summaries, warnings) goes nowhere while the
command runs; the error line that ``run`` prints afterwards still appears.

This module imports nothing heavy at module level.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

#: What we set when the user has not: TensorFlow's C++ log shows errors and fatal messages only.
DEFAULT_TF_LOG_LEVEL = "2"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
# glog/absl line header, e.g. "I0000 00:00:1796661734.554210    6691 port.cc:153] oneDNN custom operations ..."
_LOG_HEADER = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
# absl's notice, printed before TensorFlow has read TF_CPP_MIN_LOG_LEVEL.
_ABSL_PREINIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# Never closed: loggers created while quiet keep a reference to it.
_NULL = open(os.devnull, "w")


def tf_log_level() -> int:
    """The C++ log level in force (sets our default first when the user has not chosen one)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LOG_LEVEL)
    try:
        return int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        return 0  # what TensorFlow does with a value it cannot parse


def filter_tf_log(text: str, level: int) -> str:
    """The lines of ``text`` TensorFlow should have printed at ``level`` (continuation lines follow their header)."""
    kept, keep = [], True
    for line in text.splitlines(keepends=True):
        m = _LOG_HEADER.match(line)
        if m:
            keep = _SEVERITY[m.group(1)] >= level
        elif line.startswith(_ABSL_PREINIT):
            keep = _SEVERITY["W"] >= level
        if keep:
            kept.append(line)
    return "".join(kept)


@contextmanager
def _filtered_fd2(level: int) -> Iterator[None]:
    """Capture what C code writes to file descriptor 2, then replay what ``level`` allows to ``sys.stderr``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        try:
            os.dup2(capture.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            rest = filter_tf_log(capture.read().decode("utf-8", "replace"), level)
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()


def import_tensorflow():
    """Import TensorFlow without its start-up chatter; returns the module (ImportError when not installed)."""
    level = tf_log_level()
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with _filtered_fd2(level):
        import tensorflow as tf  # noqa: TID251 -- the one place

    return tf


def import_keras():
    """Import Keras (TensorFlow backend) quietly; returns the keras module."""
    import_tensorflow()
    import keras  # noqa: TID251 -- the one place

    return keras


@contextmanager
def quiet_stderr(enabled: bool = True) -> Iterator[None]:
    """While enabled, Python-level writes to ``sys.stderr`` go nowhere (``--quiet``: errors are printed after)."""
    if not enabled:
        yield
        return
    saved = sys.stderr
    saved.flush()
    sys.stderr = _NULL
    try:
        yield
    finally:
        sys.stderr = saved


def n_threads(requested: int = 0) -> int:
    """``requested`` if positive, else every core this process may use (its CPU affinity, not the machine's count)."""
    if requested and requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
