"""The ``export_encoder`` command: a ``.keras`` encoder to the portable NumPy format, checked against Keras.

The pattern every command follows (REFACTOR_PLAN in the issue-9 notes): an
options dataclass that owns defaults, choices and validation, and ``run(opts)``
in the module that owns the work; ``vae.cli`` only turns argv into the options.

This module is where the encoder engines (KerasEncoder, NumpyEncoder,
load_encoder) and the export move when ``vae/embed.py`` is split; until then it
uses them from there.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .options import option, quiet_option

#: Rows of CLR-like random input on which the export is compared with Keras.
CHECK_ROWS = 256


@dataclass
class ExportOptions:
    """Everything ``export_encoder`` takes."""

    model: str = option(flags=("-m", "--model"), required=True, metavar="ENCODER.keras", help="the encoder to export")
    output: str | None = option(None, flags=("-o", "--output"), metavar="NAME",
                                help="output name (NAME.npz + NAME.json); default: beside the encoder")
    tolerance: float = option(1e-4, help="fail if NumPy and Keras z_mean differ by more than this")
    quiet: bool = quiet_option()

    def __post_init__(self) -> None:
        if not self.model:
            raise InputError("-m/--model ENCODER.keras is required")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise InputError(f"--tolerance must be a finite number >= 0, not {self.tolerance:g}")


@dataclass
class ExportResult:
    spec_path: str
    weights_path: str
    max_diff: float
    latent: int


def run(opts: ExportOptions) -> ExportResult:
    """Build the export in memory, compare it with Keras on random CLR-like rows, and write it only when they agree."""
    from .embed import KerasEncoder, NumpyEncoder, export_encoder, portable_from_keras, portable_paths
    from .matrix import commit_together, pending_path
    from .paths import check_paths

    check_paths([opts.model], list(portable_paths(opts.output or opts.model)))
    keras_enc = KerasEncoder(opts.model)
    # Checked before anything is written: a failed export leaves nothing behind.
    numpy_enc = NumpyEncoder.from_export(*portable_from_keras(keras_enc.full_model, opts.model), source=opts.model)
    # CLR-like input: zero-mean values of the scale the encoder sees.
    x = np.random.default_rng(0).normal(0.0, 1.0, size=(CHECK_ROWS, keras_enc.input_dim)).astype(np.float32)
    diff = float(np.max(np.abs(keras_enc.z_mean(x) - numpy_enc.z_mean(x))))
    if not diff <= opts.tolerance:
        raise InputError(f"the export would differ from Keras by {diff:.2e} > {opts.tolerance:g}; nothing written "
                         "(unsupported layer semantics?)")
    with commit_together():
        spec_path, weights_path = export_encoder(opts.model, opts.output)
        size = os.path.getsize(pending_path(weights_path)) + os.path.getsize(pending_path(spec_path))
    if not opts.quiet:
        print(f"export_encoder: {opts.model} -> {weights_path} + {spec_path} ({size / 1e6:.1f} MB; "
              f"latent {numpy_enc.latent}; max |numpy - keras| z_mean = {diff:.2e})", file=sys.stderr)
    return ExportResult(spec_path, weights_path, diff, numpy_enc.latent)
