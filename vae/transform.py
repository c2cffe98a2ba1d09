"""Per-group centred log-ratio (CLR) with Jeffreys pseudocounts: the one implementation.

For each k-mer group g with n_g features, ``clr(x)_j = log(x_j + 0.5/n_g) - mean_g(log(x + 0.5/n_g))``.
The model's input is the CLR of columns 1..2772 of the matrix (the length column is dropped).

:func:`clr` works on NumPy arrays; :func:`clr_ops` is the same arithmetic in
``keras.ops`` for use inside a compiled graph. Both read their group layout
and pseudocounts from :data:`PSEUDOCOUNTS` / ``FEATURE_SLICES`` only.
"""
from __future__ import annotations

import numpy as np

from .kmers import FEATURE_SLICES, K_ORDER, N_CANONICAL, N_COLUMNS, N_FEATURES

#: Jeffreys pseudocount of each group: 0.5 / number of canonical k-mers in it.
PSEUDOCOUNTS: dict[int, float] = {k: 0.5 / N_CANONICAL[k] for k in K_ORDER}


def pseudocount_vector() -> np.ndarray:
    """The pseudocount of every feature column (2772,), float32."""
    v = np.empty(N_FEATURES, dtype=np.float32)
    for k, sl in FEATURE_SLICES.items():
        v[sl] = PSEUDOCOUNTS[k]
    return v


def features(matrix_rows: np.ndarray) -> np.ndarray:
    """The k-mer columns (1..2772) of full matrix rows; passes feature-only rows through."""
    if matrix_rows.shape[-1] == N_COLUMNS:
        return matrix_rows[..., 1:]
    if matrix_rows.shape[-1] == N_FEATURES:
        return matrix_rows
    raise ValueError(f"expected {N_COLUMNS} (or {N_FEATURES}) columns, got {matrix_rows.shape[-1]}")


def clr(rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """CLR (float32) of matrix rows (2773 columns) or feature rows (2772 columns)."""
    x = np.asarray(features(rows), dtype=np.float32)
    logs = np.log(x + pseudocount_vector(), out=out)
    for sl in FEATURE_SLICES.values():
        g = logs[..., sl]
        g -= g.mean(axis=-1, keepdims=True)
    return logs


def clr_ops(x):
    """:func:`clr` for feature rows (2772 columns) as a ``keras.ops`` graph (imports Keras lazily)."""
    from .runtime import import_keras

    ops = import_keras().ops

    logs = ops.log(ops.cast(x, "float32") + ops.convert_to_tensor(pseudocount_vector()))
    parts = []
    for sl in FEATURE_SLICES.values():
        g = logs[..., sl.start : sl.stop]
        parts.append(g - ops.mean(g, axis=-1, keepdims=True))
    return ops.concatenate(parts, axis=-1)
