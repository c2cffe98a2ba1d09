"""Encoders: loading, z_mean inference with two engines, and the portable export (``export_encoder``).

Two engines compute the same thing, z_mean of the CLR of a k-mer matrix:

* :class:`KerasEncoder` loads a ``.keras`` encoder (safe mode, the package's
  custom layers) and runs only its z_mean branch;
* :class:`NumpyEncoder` runs the portable export (weights ``.npz`` + layer
  description ``.json``, BatchNorm folded into the Dense layers) with NumPy
  alone, so a laptop without TensorFlow can embed.

This module must not import TensorFlow or Keras at module level: the NumPy
engine is part of the light path. Keras is imported inside the functions that
need it. Inference never samples: the output is z_mean, so the same input gives
the same output bit for bit. The embedding pipelines (files, streams, FASTA)
are :mod:`vae.embed`'s.

The ``export_encoder`` command is :class:`ExportOptions` + :func:`run` (the
pattern every command follows: an options dataclass that owns defaults, choices
and validation, and ``run(opts)`` in the module that owns the work).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np

from . import artifacts
from .artifacts import KERAS_NAME, SPEC_NAME, WEIGHTS_NAME
from .errors import InputError
from .kmers import LENGTH_COLUMN, N_COLUMNS, N_FEATURES
from .matrix import atomic_path, atomic_text, check_output_dir, check_rows, gather_rows
from .options import option, quiet_option
from .transform import clr

PORTABLE_FORMAT = "kmer-vae-portable-encoder"

#: 2 adds "columns" (models of some k-mer groups); files without it are written as version 1.
PORTABLE_VERSION = 2

#: Rows per inference batch: large enough that the matmuls dominate, small enough for a laptop (~50 MB of input).
DEFAULT_BATCH = 4096

ENGINES = ("auto", "keras", "numpy")

#: Output dtype of embeddings (column 0: length, then z_mean).
OUT_DTYPE = np.float32

#: Name of the z_mean output/layer; mirrors vae.model.Z_MEAN, which cannot be imported here without Keras.
_Z_MEAN = "z_mean"

#: Activations the NumPy engine implements.
_ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh", "sigmoid")


class Encoder(Protocol):
    """What both engines offer."""

    input_dim: int
    latent: int
    source: str

    def z_mean(self, x: np.ndarray) -> np.ndarray:
        """z_mean (n, latent) float32 of CLR feature rows (n, input_dim)."""


def keras_available() -> bool:
    """Whether TensorFlow and Keras can be imported (without importing them)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("keras") is not None
    except (ValueError, ImportError):
        # find_spec raises ValueError when a module was set to None in sys.modules (blocked).
        return False


def _load_keras_model(path: str):
    if not os.path.exists(path):
        raise InputError(f"{path}: no such encoder file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a .keras encoder")
    if not keras_available():
        raise InputError(f"{path}: the keras engine needs TensorFlow and Keras (pip install 'kmer-vae[train]'); "
                         "or use --engine numpy with a portable export (export_encoder)")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a .keras model (damaged or truncated: not a zip archive)")
    if _keras_class(path) == "VAE":
        raise InputError(f"{path}: a whole VAE, not an encoder: give the run's encoder.keras (beside it, or in the run folder)")
    from .layers import CUSTOM_OBJECTS
    from .runtime import import_keras

    keras = import_keras()

    try:
        return keras.saving.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types (ValueError, TypeError, OSError, zipfile.BadZipFile)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot load the encoder ({type(e).__name__}: {msg})") from None


def _keras_class(path: str) -> str | None:
    """The top-level class name in a .keras archive's config.json (None when unreadable)."""
    try:
        with zipfile.ZipFile(path) as z, z.open("config.json") as fh:
            return json.load(fh).get("class_name")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, AttributeError):
        return None


def _z_mean_tensor(model):
    """The z_mean output of an encoder: by output name, then layer name, else the first output."""
    outputs = list(model.outputs)
    names = list(getattr(model, "output_names", []) or [])
    if _Z_MEAN in names and len(names) == len(outputs):
        return outputs[names.index(_Z_MEAN)]
    try:
        return model.get_layer(_Z_MEAN).output
    except ValueError:
        return outputs[0]


class KerasEncoder:
    """A ``.keras`` encoder cut down to its z_mean branch (no sampling is ever computed)."""

    def __init__(self, path: str):
        model = _load_keras_model(path)  # first: it imports Keras quietly, or refuses the file without importing it
        import keras  # noqa: TID251 -- already imported (quietly) by _load_keras_model
        if not getattr(model, "outputs", None) or not getattr(model, "inputs", None):
            raise InputError(f"{path}: not a functional encoder (no symbolic inputs/outputs)")
        self.source = str(path)
        self.model = keras.Model(model.inputs[0], _z_mean_tensor(model), name="z_mean_encoder")
        self.input_dim = int(model.inputs[0].shape[-1])
        self.latent = int(self.model.outputs[0].shape[-1])
        self.full_model = model

    def z_mean(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float32)


def _activate(x: np.ndarray, fn: str, slope: float) -> np.ndarray:
    if fn == "linear":
        return x
    if fn == "relu":
        return np.maximum(x, 0, out=x)
    if fn == "leaky_relu":
        if 0.0 <= slope <= 1.0:
            return np.maximum(x, x * np.float32(slope), out=x)
        return np.where(x >= 0, x, x * np.float32(slope)).astype(np.float32, copy=False)
    if fn == "tanh":
        return np.tanh(x, out=x)
    if fn == "sigmoid":
        np.negative(x, out=x)
        np.exp(x, out=x)
        x += 1
        return np.reciprocal(x, out=x)
    raise ValueError(f"unsupported activation {fn!r}")


@dataclass
class _Op:
    kind: str  # "dense" (x @ w + b), "affine" (x * w + b, elementwise) or "activation"
    w: np.ndarray | None = None
    b: np.ndarray | None = None
    fn: str = "linear"
    slope: float = 0.0


class NumpyEncoder:
    """The portable encoder: float32 NumPy matmuls over the exported (folded) layers."""

    def __init__(self, ops: list[_Op], input_dim: int, latent: int, source: str = "<memory>",
                 columns: Sequence[int] | None = None):
        self.ops = ops
        self.input_dim = input_dim
        self.latent = latent
        self.source = source
        # The features the first layer reads (a --kmers model), None = all input_dim; a slice when contiguous.
        self.columns = None if columns is None else np.asarray(columns, dtype=np.int64)
        self._take: slice | np.ndarray | None = None
        if self.columns is not None:
            c = self.columns
            contiguous = c.size and np.array_equal(c, np.arange(c[0], c[0] + c.size))
            self._take = slice(int(c[0]), int(c[0]) + c.size) if contiguous else c

    def z_mean(self, x: np.ndarray) -> np.ndarray:
        h = np.ascontiguousarray(x, dtype=np.float32)
        if self._take is not None:
            h = np.ascontiguousarray(h[:, self._take])
        for op in self.ops:
            if op.kind == "dense":
                h = h @ op.w
                h += op.b
            elif op.kind == "affine":
                h = h * op.w
                h += op.b
            else:
                h = _activate(h, op.fn, op.slope)
        return h

    @classmethod
    def from_export(cls, spec: dict, weights: dict[str, np.ndarray], source: str = "<memory>") -> "NumpyEncoder":
        """Build from a layer description and its arrays (as written by :func:`export_encoder`)."""
        if spec.get("format") != PORTABLE_FORMAT:
            raise InputError(f"{source}: not a {PORTABLE_FORMAT} description")
        if int(spec.get("version", 0)) > PORTABLE_VERSION:
            raise InputError(f"{source}: format version {spec['version']} is newer than this kmer-vae understands ({PORTABLE_VERSION})")
        ops = []
        try:
            for layer in spec["layers"]:
                kind = layer["kind"]
                if kind in ("dense", "affine"):
                    w = np.asarray(weights[layer["weights"]], dtype=np.float32)
                    b = np.asarray(weights[layer["bias"]], dtype=np.float32)
                    ops.append(_Op(kind, np.ascontiguousarray(w), b))
                elif kind == "activation":
                    if layer["fn"] not in _ACTIVATIONS:
                        raise InputError(f"{source}: unsupported activation {layer['fn']!r}")
                    ops.append(_Op(kind, fn=layer["fn"], slope=float(layer.get("negative_slope", 0.0))))
                else:
                    raise InputError(f"{source}: unknown layer kind {kind!r}")
            input_dim, latent = int(spec["input_dim"]), int(spec["latent"])
            columns = spec.get("columns")
        except KeyError as e:
            raise InputError(f"{source}: layer description or weights incomplete (missing {e})") from None
        if columns is not None:
            try:
                columns = np.asarray(columns, dtype=np.int64).reshape(-1)
            except (TypeError, ValueError):
                raise InputError(f"{source}: 'columns' must be a list of feature indices") from None
            if columns.size == 0 or columns.min() < 0 or columns.max() >= input_dim:
                raise InputError(f"{source}: 'columns' must be feature indices in 0..{input_dim - 1}")
        return cls(ops, input_dim, latent, source, columns)

    @classmethod
    def load(cls, path: str) -> "NumpyEncoder":
        """Load ``X.json`` + ``X.npz`` (``path`` may name either, or ``X.keras`` beside them)."""
        spec_path, weights_path = portable_paths(path)
        for p in (spec_path, weights_path):
            if not os.path.exists(p):
                raise InputError(f"{p}: no such file (the portable encoder needs both {Path(spec_path).name} and "
                                 f"{Path(weights_path).name}; make them with export_encoder)")
        try:
            with open(spec_path, encoding="utf-8") as fh:
                spec = json.load(fh)
        except (OSError, ValueError) as e:
            raise InputError(f"{spec_path}: not a readable layer description ({e})") from None
        recorded = spec.get("weights_sha256") if isinstance(spec, dict) else None
        if recorded and recorded != file_sha256(weights_path):
            raise InputError(f"{weights_path}: not the weights {Path(spec_path).name} was exported with (SHA-256 differs: "
                             "damaged, or from another export); export the encoder again")
        try:
            with np.load(weights_path, allow_pickle=False) as z:
                weights = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as e:
            raise InputError(f"{weights_path}: not a readable weights file ({e})") from None
        try:
            enc = cls.from_export(spec, weights, source=spec_path)
            if enc.z_mean(np.zeros((1, enc.input_dim), np.float32)).shape != (1, enc.latent):
                raise ValueError(f"the layers do not end in {enc.latent} outputs")
            return enc
        except (ValueError, TypeError, AttributeError, IndexError) as e:  # shapes that do not chain, a malformed spec
            raise InputError(f"{spec_path}: the layer description and {Path(weights_path).name} do not fit together ({e})") from None


def portable_paths(path: str) -> tuple[str, str]:
    """(spec .json, weights .npz) of a portable encoder named by any of its files or its .keras source."""
    stem = str(path)
    for suffix in (".json", ".npz", ".keras"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem + ".json", stem + ".npz"


def _activation_name(act) -> str:
    """Normalise a Keras activation (string, function or serialised dict) to a name."""
    if isinstance(act, dict):
        act = act.get("config", {}).get("name") or act.get("class_name")
    if callable(act):
        act = getattr(act, "__name__", str(act))
    return str(act or "linear")


def _trace_z_mean(model) -> list:
    """Layers from the input to z_mean, in forward order (a single chain is required)."""
    layer = _z_mean_tensor(model)._keras_history.operation
    chain = []
    while True:
        chain.append(layer)
        if type(layer).__name__ == "InputLayer":
            break
        node_inputs = layer.input
        if isinstance(node_inputs, (list, tuple)):
            raise InputError(f"cannot export: layer {layer.name!r} ({type(layer).__name__}) has several inputs; "
                             "the portable encoder supports a single chain from input to z_mean")
        layer = node_inputs._keras_history.operation
    return chain[::-1]


def fold_batchnorm(w: np.ndarray, b: np.ndarray, gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference BatchNorm into the Dense before it: W' = W*s, b' = (b - mean)*s + beta, s = gamma/sqrt(var+eps)."""
    s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    w2 = np.asarray(w, np.float64) * s[None, :]
    b2 = (np.asarray(b, np.float64) - mean) * s + beta
    return w2.astype(np.float32), b2.astype(np.float32)


def portable_from_keras(model, source: str = "<memory>") -> tuple[dict, dict[str, np.ndarray]]:
    """The layer description and arrays of the z_mean branch of a Keras encoder, BatchNorm folded."""
    ops: list[dict] = []
    arrays: dict[str, list[np.ndarray]] = {}  # name -> [w, b], folded in place while walking
    columns: list[int] | None = None

    def add_affine(kind: str, name: str, w: np.ndarray, b: np.ndarray) -> None:
        key = f"{len(ops):02d}_{name}"
        arrays[key] = [w, b]
        ops.append({"kind": kind, "name": name, "weights": key + "/w", "bias": key + "/b", "_key": key})

    for layer in _trace_z_mean(model):
        cls, cfg = type(layer).__name__, layer.get_config()
        if cls in ("InputLayer", "Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "SpatialDropout1D"):
            continue  # identity at inference
        if cls == "KmerColumns":
            if ops or columns is not None:
                raise InputError(f"cannot export: KmerColumns {layer.name!r} must be the first layer after the input")
            columns = [int(c) for c in cfg["columns"]]
            continue
        if cls == "Dense":
            w, *rest = [np.asarray(v) for v in layer.get_weights()]
            b = rest[0] if rest else np.zeros(w.shape[1], np.float32)
            add_affine("dense", layer.name, w.astype(np.float32), b.astype(np.float32))
            act = _activation_name(cfg.get("activation"))
            if act != "linear":
                if act not in _ACTIVATIONS:
                    raise InputError(f"cannot export: Dense {layer.name!r} uses activation {act!r}; supported: {', '.join(_ACTIVATIONS)}")
                # Keras' built-in leaky_relu activation has slope 0.2.
                ops.append({"kind": "activation", "name": layer.name + "_activation", "fn": act, "negative_slope": 0.2 if act == "leaky_relu" else 0.0})
        elif cls == "BatchNormalization":
            axis = cfg.get("axis", -1)
            axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
            if axis not in (-1, len(layer.input.shape) - 1):
                raise InputError(f"cannot export: BatchNormalization {layer.name!r} normalises axis {axis}, not the feature axis")
            weights = {v.path.rsplit("/", 1)[-1]: np.asarray(v) for v in layer.weights}
            n = weights["moving_mean"].shape[0]
            gamma = weights.get("gamma", np.ones(n, np.float32))
            beta = weights.get("beta", np.zeros(n, np.float32))
            eps = float(cfg.get("epsilon", 1e-3))
            if ops and ops[-1]["kind"] == "dense":
                key = ops[-1]["_key"]
                arrays[key] = list(fold_batchnorm(*arrays[key], gamma, beta, weights["moving_mean"], weights["moving_variance"], eps))
                ops[-1]["folded"] = layer.name
            else:
                # No Dense to fold into: keep it as an elementwise affine map.
                s = (gamma / np.sqrt(weights["moving_variance"].astype(np.float64) + eps))
                add_affine("affine", layer.name, s.astype(np.float32), (beta - weights["moving_mean"] * s).astype(np.float32))
        elif cls == "LeakyReLU":
            slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))  # Keras 2 configs call it alpha
            ops.append({"kind": "activation", "name": layer.name, "fn": "leaky_relu", "negative_slope": float(slope)})
        elif cls == "ReLU":
            if cfg.get("max_value") is not None or float(cfg.get("threshold", 0.0)) != 0.0:
                raise InputError(f"cannot export: ReLU {layer.name!r} with max_value/threshold is not supported")
            slope = float(cfg.get("negative_slope", 0.0))
            ops.append({"kind": "activation", "name": layer.name, "fn": "leaky_relu" if slope else "relu", "negative_slope": slope})
        elif cls == "Activation":
            act = _activation_name(cfg.get("activation"))
            if act not in _ACTIVATIONS:
                raise InputError(f"cannot export: Activation {layer.name!r} is {act!r}; supported: {', '.join(_ACTIVATIONS)}")
            ops.append({"kind": "activation", "name": layer.name, "fn": act, "negative_slope": 0.2 if act == "leaky_relu" else 0.0})
        else:
            raise InputError(f"cannot export: layer {layer.name!r} of type {cls} on the z_mean path is not supported "
                             "(Dense, BatchNormalization, LeakyReLU, ReLU, Activation, Dropout are)")
    flat: dict[str, np.ndarray] = {}
    for op in ops:
        key = op.pop("_key", None)
        if key is not None:
            flat[key + "/w"], flat[key + "/b"] = (np.ascontiguousarray(a, dtype=np.float32) for a in arrays[key])
    spec = {
        "format": PORTABLE_FORMAT,
        "version": 1,
        "input_dim": int(model.inputs[0].shape[-1]),
        "latent": int(_z_mean_tensor(model).shape[-1]),
        "input_transform": "clr of k-mer columns 1..2772 (vae.transform.clr); output is z_mean",
        "source": os.path.basename(source),
        "layers": ops,
    }
    if columns is not None:
        # The first layer reads only these features (indices into the 2772 CLR features = matrix column - 1).
        # Version 2: a reader that ignored them would fail on the first matmul, so older readers refuse it.
        spec["version"] = 2
        spec["columns"] = columns
    return spec, flat


def file_sha256(path: str) -> str:
    """SHA-256 of a file, read in 1 MB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_portable(keras_path: str, out_path: str | None = None) -> tuple[str, str]:
    """Write the portable export of ``keras_path``: ``OUT.json`` + ``OUT.npz`` (default: beside it). Returns their paths."""
    model = _load_keras_model(keras_path)
    spec, arrays = portable_from_keras(model, keras_path)
    spec["source_sha256"] = file_sha256(keras_path)
    spec_path, weights_path = portable_paths(out_path or keras_path)
    check_output_dir(spec_path)
    # Weights first: a spec is only ever in place beside the weights whose checksum it names.
    with atomic_path(weights_path, ".npz") as tmp_w:
        np.savez(tmp_w, **arrays)
        spec["weights_sha256"] = file_sha256(tmp_w)
    with atomic_text(spec_path) as fh:
        json.dump(spec, fh, indent=1)
        fh.write("\n")
    return spec_path, weights_path


def resolve_engine(engine: str) -> str:
    """``auto`` -> ``keras`` when TensorFlow is importable, else ``numpy``."""
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "auto":
        return "keras" if keras_available() else "numpy"
    return engine


def default_model_path(engine: str) -> str:
    """The shipped encoder for ``engine`` (vae/models/default/, package data); a clear error when missing."""
    model_dir = artifacts.shipped_model_dir()  # looked up each time (tests point it elsewhere)
    keras_path, spec_path = model_dir / KERAS_NAME, model_dir / SPEC_NAME
    # The keras engine can fall back to the portable export (same z_mean within 1e-4), not the reverse.
    for want in ((keras_path, spec_path) if engine == "keras" else (spec_path,)):
        if want.exists():
            return str(want)
    raise InputError(f"no default model: {keras_path if engine == 'keras' else spec_path} is missing (the package's "
                     f"models/default/ should hold {KERAS_NAME}, {WEIGHTS_NAME} and {SPEC_NAME}); pass -m ENCODER")


def _is_portable(path: str) -> bool:
    return str(path).endswith((".json", ".npz"))


def load_encoder(path: str | None = None, engine: str = "auto") -> Encoder:
    """Load an encoder. ``path``: a .keras file or a portable export (.json/.npz); None = the default model.

    ``auto`` picks keras when TensorFlow is importable and the path is a .keras
    file, numpy otherwise. With the numpy engine a .keras path uses the portable
    export beside it (``X.json``/``X.npz``) when it was made from that very
    file (its SHA-256 is recorded), else converts it in memory (needs Keras).
    """
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if path is not None and os.path.isdir(path):
        # A run folder or Models/NAME/: its encoder.keras, else its portable export.
        inside = [os.path.join(path, n) for n in (KERAS_NAME, SPEC_NAME) if os.path.exists(os.path.join(path, n))]
        if not inside:
            raise InputError(f"{path}: a folder without {KERAS_NAME} or {SPEC_NAME}")
        path = inside[0]
    if path is not None and _is_portable(path):
        if engine == "keras":
            raise InputError(f"{path}: a portable export runs on the numpy engine only (use --engine numpy or auto)")
        return NumpyEncoder.load(str(path))
    engine = resolve_engine(engine)
    if path is None:
        path = default_model_path(engine)
        if _is_portable(path):
            return NumpyEncoder.load(path)
    path = str(path)
    if engine == "keras":
        return KerasEncoder(path)
    spec_path, _ = portable_paths(path)
    if os.path.exists(spec_path):
        if not os.path.exists(path):
            return NumpyEncoder.load(spec_path)
        try:
            with open(spec_path, encoding="utf-8") as fh:
                recorded = json.load(fh).get("source_sha256")
        except (OSError, ValueError):
            recorded = None
        if recorded == file_sha256(path):
            return NumpyEncoder.load(spec_path)
        print(f"warning: {spec_path} was not exported from {path}; converting {path} instead", file=sys.stderr)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such encoder file")
    if not keras_available():
        raise InputError(f"{path}: the numpy engine needs the portable export beside it ({Path(spec_path).name} + "
                         f"{Path(spec_path).stem}.npz; make them with export_encoder where TensorFlow is installed)")
    model = _load_keras_model(path)
    spec, arrays = portable_from_keras(model, path)
    return NumpyEncoder.from_export(spec, arrays, source=path)


def check_width(encoder: Encoder) -> None:
    """The encoder must take the 2772 k-mer features of the matrix."""
    if encoder.input_dim != N_FEATURES:
        raise InputError(f"{encoder.source}: the encoder takes {encoder.input_dim} input features but a k-mer matrix "
                         f"provides {N_FEATURES} (columns 1-{N_FEATURES} of {N_COLUMNS}); it was trained on another layout")


#: Rows the CLR transforms at once: ~2.8 MB of float32, so its several passes stay in cache
#: (on a whole 4096-row batch it ran ~2x slower, memory-bound).
_CLR_BLOCK = 256


def clr_batch(rows: np.ndarray) -> np.ndarray:
    """:func:`vae.transform.clr` of a batch, computed in cache-sized blocks into one float32 array."""
    out = np.empty((rows.shape[0], N_FEATURES), dtype=np.float32)
    for a in range(0, rows.shape[0], _CLR_BLOCK):
        clr(rows[a : a + _CLR_BLOCK], out=out[a : a + _CLR_BLOCK])
    return out


def embed_rows(encoder: Encoder, rows: np.ndarray, name: str = "input", offset: int = 0) -> np.ndarray:
    """(n, 1 + latent) float32: the length column, then z_mean of the CLR of the k-mer columns.

    Rows with NaN/Inf, negative or above-1 values are refused (InputError naming ``name`` and the row).
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != N_COLUMNS:
        raise InputError(f"expected k-mer matrix rows of {N_COLUMNS} columns, got shape {rows.shape}")
    check_rows(rows, name, offset=offset)
    out = np.empty((rows.shape[0], 1 + encoder.latent), dtype=OUT_DTYPE)
    out[:, 0] = rows[:, LENGTH_COLUMN]
    if rows.shape[0]:
        out[:, 1:] = encoder.z_mean(clr_batch(rows))
        if not np.isfinite(out[:, 1:]).all():  # valid input, so the encoder's weights are broken (e.g. NaN)
            raise InputError(f"{encoder.source}: the encoder gave non-finite z_mean for {name} rows from {offset}; "
                             "its weights are damaged: nothing written")
    return out


def z_mean_of(encoder: Encoder, matrix: np.ndarray, rows: np.ndarray | None = None,
              batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """z_mean (n, latent) of some rows of a (memmapped) matrix, in batches; ``rows`` None = all, else row indices."""
    n = matrix.shape[0] if rows is None else len(rows)
    out = np.empty((n, encoder.latent), dtype=OUT_DTYPE)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        if rows is None:
            block = np.asarray(matrix[start:stop])
        else:
            block = gather_rows(matrix, rows[start:stop])
        check_rows(block, "matrix", row_numbers=None if rows is None else np.asarray(rows[start:stop]), offset=start)
        out[start:stop] = encoder.z_mean(clr_batch(block))
    return out


def iter_embeddings(encoder: Encoder, batches: Iterator[np.ndarray], name: str = "input") -> Iterator[np.ndarray]:
    """Embed an iterator of row batches (``name`` is the input, for messages about bad rows)."""
    offset = 0
    for rows in batches:
        yield embed_rows(encoder, rows, name, offset)
        offset += len(rows)


# ---------------------------------------------------------------- the export_encoder command

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
        spec_path, weights_path = export_portable(opts.model, opts.output)
        size = os.path.getsize(pending_path(weights_path)) + os.path.getsize(pending_path(spec_path))
    if not opts.quiet:
        print(f"export_encoder: {opts.model} -> {weights_path} + {spec_path} ({size / 1e6:.1f} MB; "
              f"latent {numpy_enc.latent}; max |numpy - keras| z_mean = {diff:.2e})", file=sys.stderr)
    return ExportResult(spec_path, weights_path, diff, numpy_enc.latent)
