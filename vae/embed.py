"""Encoder loading, z_mean inference, and the portable NumPy encoder.

Two engines compute the same thing, z_mean of the CLR of a k-mer matrix:

* :class:`KerasEncoder` loads a ``.keras`` encoder (safe mode, the package's
  custom layers) and runs only its z_mean branch;
* :class:`NumpyEncoder` runs the portable export (weights ``.npz`` + layer
  description ``.json``, BatchNorm folded into the Dense layers) with NumPy
  alone, so a laptop without TensorFlow can embed.

This module must not import TensorFlow or Keras at module level: the NumPy
engine is part of the light path. Keras is imported inside the functions that
need it.

Inference never samples: the output is z_mean, so the same input gives the same
output bit for bit. Embedding streams in batches (memmap in, streaming writer
out), so matrices larger than RAM work.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol, Sequence

import numpy as np

from .errors import InputError
from .kmers import LENGTH_COLUMN, N_COLUMNS, N_FEATURES
from .matrix import NpyStreamWriter, atomic_path, atomic_text, check_output_dir, open_matrix
from .transform import clr

#: The repository checkout (Models/ lies beside the vae/ package).
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "Models" / "default"
KERAS_NAME = "encoder.keras"
WEIGHTS_NAME = "encoder.npz"
SPEC_NAME = "encoder.json"
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
FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".ffn", ".fas", ".fsa", ".contigs")
NPY_MAGIC = b"\x93NUMPY"


class Encoder(Protocol):
    """What both engines offer."""

    input_dim: int
    latent: int
    source: str

    def z_mean(self, x: np.ndarray) -> np.ndarray:
        """z_mean (n, latent) float32 of CLR feature rows (n, input_dim)."""


# ---------------------------------------------------------------- engines


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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from .layers import CUSTOM_OBJECTS

    try:
        return keras.saving.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types (ValueError, TypeError, OSError, zipfile.BadZipFile)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot load the encoder ({type(e).__name__}: {msg})") from None


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
        import keras

        model = _load_keras_model(path)
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
        try:
            with np.load(weights_path, allow_pickle=False) as z:
                weights = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise InputError(f"{weights_path}: not a readable weights file ({e})") from None
        return cls.from_export(spec, weights, source=spec_path)


def portable_paths(path: str) -> tuple[str, str]:
    """(spec .json, weights .npz) of a portable encoder named by any of its files or its .keras source."""
    stem = str(path)
    for suffix in (".json", ".npz", ".keras"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem + ".json", stem + ".npz"


# ---------------------------------------------------------------- export


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


def export_encoder(keras_path: str, out_path: str | None = None) -> tuple[str, str]:
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


# ---------------------------------------------------------------- choosing and loading


def resolve_engine(engine: str) -> str:
    """``auto`` -> ``keras`` when TensorFlow is importable, else ``numpy``."""
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "auto":
        return "keras" if keras_available() else "numpy"
    return engine


def default_model_path(engine: str) -> str:
    """The shipped encoder for ``engine`` (Models/default/ in the checkout); a clear error when missing."""
    keras_path, spec_path = DEFAULT_MODEL_DIR / KERAS_NAME, DEFAULT_MODEL_DIR / SPEC_NAME
    # The keras engine can fall back to the portable export (same z_mean within 1e-4), not the reverse.
    for want in ((keras_path, spec_path) if engine == "keras" else (spec_path,)):
        if want.exists():
            return str(want)
    raise InputError(f"no default model: {keras_path if engine == 'keras' else spec_path} is missing (the checkout's "
                     f"Models/default/ should hold {KERAS_NAME}, {WEIGHTS_NAME} and {SPEC_NAME}); pass -m ENCODER")


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


# ---------------------------------------------------------------- embedding


#: Rows the CLR transforms at once: ~2.8 MB of float32, so its several passes stay in cache
#: (on a whole 4096-row batch it ran ~2x slower, memory-bound).
_CLR_BLOCK = 256


def clr_batch(rows: np.ndarray) -> np.ndarray:
    """:func:`vae.transform.clr` of a batch, computed in cache-sized blocks into one float32 array."""
    out = np.empty((rows.shape[0], N_FEATURES), dtype=np.float32)
    for a in range(0, rows.shape[0], _CLR_BLOCK):
        clr(rows[a : a + _CLR_BLOCK], out=out[a : a + _CLR_BLOCK])
    return out


def embed_rows(encoder: Encoder, rows: np.ndarray) -> np.ndarray:
    """(n, 1 + latent) float32: the length column, then z_mean of the CLR of the k-mer columns."""
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != N_COLUMNS:
        raise InputError(f"expected k-mer matrix rows of {N_COLUMNS} columns, got shape {rows.shape}")
    out = np.empty((rows.shape[0], 1 + encoder.latent), dtype=OUT_DTYPE)
    out[:, 0] = rows[:, LENGTH_COLUMN]
    if rows.shape[0]:
        out[:, 1:] = encoder.z_mean(clr_batch(rows))
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
            idx = np.asarray(rows[start:stop])
            order = np.argsort(idx, kind="stable")
            block = np.empty((stop - start, matrix.shape[1]), dtype=matrix.dtype)
            block[order] = matrix[idx[order]]  # sorted reads: sequential-ish on disk
        out[start:stop] = encoder.z_mean(clr_batch(block))
    return out


def embed_matrix(rows: np.ndarray, model_path: str | None = None, engine: str = "auto",
                 batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """z_mean (n, latent) float32 of in-memory k-mer matrix rows (n, 2773), no length column; None = default model."""
    encoder = load_encoder(model_path, engine)
    check_width(encoder)
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != N_COLUMNS:
        raise InputError(f"expected k-mer matrix rows of {N_COLUMNS} columns, got shape {rows.shape}")
    return z_mean_of(encoder, rows, batch_size=batch_size)


def iter_embeddings(encoder: Encoder, batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Embed an iterator of row batches."""
    for rows in batches:
        yield embed_rows(encoder, rows)


def _iter_memmap(matrix: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, matrix.shape[0], batch_size):
        yield np.asarray(matrix[start : start + batch_size])


def _read_full(fh: BinaryIO, n: int) -> bytes:
    """Read exactly n bytes unless the stream ends (pipes return partial reads)."""
    parts, got = [], 0
    while got < n:
        b = fh.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def read_npy_stream_header(fh: BinaryIO, name: str = "stdin") -> tuple[tuple[int, ...], np.dtype]:
    """Read a .npy header from a non-seekable stream; returns (shape, dtype), leaving the stream at the data."""
    magic = _read_full(fh, 8)
    if not magic:
        raise InputError(f"{name}: empty input (expected a .npy k-mer matrix)")
    if not magic.startswith(NPY_MAGIC):
        hint = " (FASTA input: give it with -i FILE)" if magic.lstrip()[:1] == b">" or magic[:2] == b"\x1f\x8b" else ""
        raise InputError(f"{name}: not a .npy matrix{hint}")
    major = magic[6]
    hlen_size = 2 if major == 1 else 4
    hlen = int.from_bytes(_read_full(fh, hlen_size), "little")
    header = _read_full(fh, hlen)
    if len(header) != hlen:
        raise InputError(f"{name}: truncated .npy header")
    try:
        import ast

        d = ast.literal_eval(header.decode("latin1"))
        shape, fortran, dtype = tuple(d["shape"]), bool(d["fortran_order"]), np.dtype(d["descr"])
    except (ValueError, SyntaxError, KeyError, TypeError) as e:
        raise InputError(f"{name}: unreadable .npy header ({e})") from None
    if fortran:
        raise InputError(f"{name}: Fortran-ordered .npy cannot be streamed; save it in C order")
    if len(shape) != 2:
        raise InputError(f"{name}: expected a 2-D matrix, got shape {shape}")
    if dtype.kind != "f" or dtype.hasobject:
        raise InputError(f"{name}: expected a float matrix, got dtype {dtype}")
    if shape[1] != N_COLUMNS:
        raise InputError(f"{name}: has {shape[1]} columns, expected {N_COLUMNS} (length + {N_FEATURES} k-mer frequencies)")
    return shape, dtype


def iter_npy_stream(fh: BinaryIO, shape: tuple[int, int], dtype: np.dtype, batch_size: int, name: str = "stdin") -> Iterator[np.ndarray]:
    """Rows of a .npy body from a stream, ``batch_size`` at a time."""
    n, cols = shape
    row_bytes = cols * dtype.itemsize
    done = 0
    while done < n:
        take = min(batch_size, n - done)
        buf = _read_full(fh, take * row_bytes)
        if len(buf) != take * row_bytes:
            raise InputError(f"{name}: input ended after {done + len(buf) // row_bytes:,} of {n:,} rows (truncated .npy)")
        yield np.frombuffer(buf, dtype=dtype).reshape(take, cols)
        done += take


class _StreamNpyWriter:
    """Write a .npy of known shape to a non-seekable stream: header first, then rows."""

    def __init__(self, fh: BinaryIO, n_rows: int, n_cols: int):
        self.fh, self.n_cols, self.expected, self.rows = fh, n_cols, n_rows, 0
        np.lib.format.write_array_header_1_0(fh, {"descr": np.dtype(OUT_DTYPE).str, "fortran_order": False, "shape": (n_rows, n_cols)})

    def write(self, rows: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(rows, dtype=OUT_DTYPE).data)
        self.rows += rows.shape[0]

    def commit(self) -> None:
        self.fh.flush()
        if self.rows != self.expected:  # cannot happen unless the reader lied; never emit a wrong header silently
            raise RuntimeError(f"wrote {self.rows} rows, header says {self.expected}")


def embed_matrix_file(encoder: Encoder, in_path: str, out_path: str, batch_size: int = DEFAULT_BATCH,
                      progress: Callable[[int], None] | None = None) -> int:
    """Embed the matrix at ``in_path`` into ``out_path`` (atomic); returns the number of rows."""
    check_width(encoder)
    matrix = open_matrix(in_path)
    check_output_dir(out_path)
    with NpyStreamWriter(out_path, 1 + encoder.latent, OUT_DTYPE) as w:
        for emb in iter_embeddings(encoder, _iter_memmap(matrix, batch_size)):
            w.write(emb)
            if progress is not None:
                progress(emb.shape[0])
        w.commit()
    return matrix.shape[0]


def embed_stream(encoder: Encoder, in_fh: BinaryIO, out_fh: BinaryIO, batch_size: int = DEFAULT_BATCH,
                 progress: Callable[[int], None] | None = None, name: str = "stdin") -> int:
    """Embed a .npy read from a stream (e.g. stdin) into a .npy written to a stream (e.g. stdout)."""
    check_width(encoder)
    shape, dtype = read_npy_stream_header(in_fh, name)
    w = _StreamNpyWriter(out_fh, shape[0], 1 + encoder.latent)
    for emb in iter_embeddings(encoder, iter_npy_stream(in_fh, shape, dtype, batch_size, name)):
        w.write(emb)
        if progress is not None:
            progress(emb.shape[0])
    w.commit()
    return shape[0]


def sniff_input(path: str) -> str:
    """``npy`` or ``fasta``: by extension first, then by content (gzip is looked into)."""
    low = path.lower()
    if low.endswith(".npy"):
        return "npy"
    base = low[:-3] if low.endswith(".gz") else low
    if base.endswith(FASTA_SUFFIXES):
        return "fasta"
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a file")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head[:2] == b"\x1f\x8b":
        import gzip

        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(4096)
        except (OSError, EOFError) as e:
            raise InputError(f"{path}: damaged gzip data ({e})") from None
    if head.lstrip()[:1] == b">":
        return "fasta"
    raise InputError(f"{path}: neither a .npy k-mer matrix nor a FASTA file")


def default_ids_path(out_path: str) -> str:
    """``emb.npy`` -> ``emb.txt``: where the IDs of FASTA input go."""
    return (out_path[:-4] if out_path.endswith(".npy") else out_path) + ".txt"


def _move_into_place(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``; across filesystems copy beside ``dst`` first so the final step stays a rename."""
    try:
        os.replace(src, dst)
    except OSError:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def embed_fasta(encoder: Encoder, inputs: Sequence[str], out: str | BinaryIO, ids_path: str, count_opts=None,
                batch_size: int = DEFAULT_BATCH, tmp_dir: str | None = None,
                count_progress=None, progress: Callable[[int], None] | None = None) -> int:
    """Count FASTA ``inputs`` and embed each counted block as it comes; IDs to ``ids_path``; returns rows.

    No k-mer matrix is written. A file output is written under a temporary name
    and renamed when complete. A stream output (stdout) must state the row count
    in its .npy header first, so there the embeddings (1.5 KB a contig at latent
    384) wait in a temporary file in ``tmp_dir`` until counting is done.
    """
    from .count import CountOptions, CountStats, iter_counted

    check_width(encoder)
    check_output_dir(ids_path)
    opts = count_opts or CountOptions()
    stats = CountStats(files=list(inputs))
    to_stream = not isinstance(out, str)
    work = tempfile.mkdtemp(prefix=".embedding-", dir=tmp_dir) if to_stream else None
    if not to_stream:
        check_output_dir(out)
    target = os.path.join(work, "emb.npy") if to_stream else out
    ids_target = os.path.join(work, "ids.txt") if to_stream else ids_path
    try:
        with NpyStreamWriter(target, 1 + encoder.latent, OUT_DTYPE) as w, atomic_text(ids_target) as id_fh:
            for block in iter_counted(list(inputs), opts, stats, count_progress):
                for a in range(0, block.rows.shape[0], batch_size):
                    emb = embed_rows(encoder, block.rows[a : a + batch_size])
                    w.write(emb)
                    if progress is not None:
                        progress(emb.shape[0])
                id_fh.writelines(i + "\n" for i in block.ids)
            if stats.rows == 0:
                raise InputError("no sequences were counted (all inputs empty or shorter than --min-length)")
            w.commit()
        if to_stream:
            emb_all = np.load(target, mmap_mode="r", allow_pickle=False)
            sw = _StreamNpyWriter(out, emb_all.shape[0], emb_all.shape[1])
            for a in range(0, emb_all.shape[0], batch_size):
                sw.write(np.asarray(emb_all[a : a + batch_size]))
            sw.commit()
            del emb_all
            _move_into_place(ids_target, ids_path)
        return stats.rows
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
