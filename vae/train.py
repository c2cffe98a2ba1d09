"""The trainer behind ``train_vae``: KL warm-up, checkpoints, LR plateaus, honest logs, resume.

A run folder (RUN_DIR) holds:

* ``config.json``: every hyperparameter, the input (path, shape, dtype), the
  split, library versions, and a list of resumes;
* ``split.npz``: train/validation row numbers (:func:`vae.data.load_split`);
* ``best/`` and ``final/``: ``vae.keras``, ``encoder.keras``, ``decoder.keras``;
  ``encoder.keras`` beside them is the best encoder (the final one until an
  epoch after warm-up has been validated): the one to give to ``embedding``;
* ``resume/``: the full VAE with its optimiser after the last completed epoch
  and ``state.json`` (epoch, best value, plateau counters, learning rate),
  written atomically at every epoch end, so Ctrl-C or a crash never loses more
  than the epoch in progress;
* ``train.log`` (the stderr log), ``history.csv`` (one row an epoch, appended
  across resumes) and ``training_curves.png``.

The training data stream from disk (:mod:`vae.data`); the CLR runs inside the
compiled step (``VAE(raw_rows=True)``).
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import json
import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from . import __version__
from .artifacts import (CONFIG_FILE, CURVES_FILE, DECODER_NAME, KERAS_NAME, RESUME_DIR, SPLIT_FILE, STATE_FILE, VAE_NAME,
                        RunFolder)
from .data import (BatchPlan, Denoiser, MatrixReader, RowStream, Split, check_values, load_split, make_split,
                   parse_length_range, tf_dataset)
from .errors import InputError
from .kmers import K_ORDER, N_FEATURES, feature_columns, groups_in, parse_k_range
from .matrix import atomic_path, atomic_text, check_fingerprint, fingerprint
from .options import check_non_negative, option
from .runtime import import_keras, import_tensorflow, n_threads  # tests and benches import import_keras from here too

# The run folder's file names are vae.artifacts' (RunFolder).
#: Validation rows (a fixed, seeded sample) on which the per-group MSE is reported each epoch.
MONITOR_ROWS = 2048
#: The curves are redrawn at most this often (seconds), and at the end.
PLOT_INTERVAL = 10.0

HISTORY_COLUMNS = (
    ["epoch", "loss", "recon", "kl", "kl_weight", "contrast", "val_loss", "val_recon", "val_kl", "mse"]
    + [f"mse_{k}" for k in K_ORDER]
    + ["lr", "samples_per_s", "train_s", "epoch_s", "best", "session"]
)


@dataclass
class TrainOptions:
    """Everything ``train_vae`` takes. These defaults are the command's defaults."""

    input: str | None = option(None, flags=("-i", "--input"), metavar="MATRIX.npy",
                               help="k-mer matrix (required unless --resume: then the run's input)")
    run_dir: str | None = option(None, flags=("-o", "--output"), metavar="RUN_DIR",
                                 help="run folder, created (default: Models/vae-<date>-<time>)")
    latent: int = option(384, help="latent dimensions")
    hidden: tuple[int, ...] = option((1024, 512), metavar="W",
                                     help="hidden layer widths of the encoder (the decoder mirrors them)")
    beta: float = option(0.05, help="weight of the KL term after warm-up")
    epochs: int = option(100, help="total epochs (with --resume: train up to this many)")
    lr: float = option(1e-4, help="initial learning rate (Adam)")
    batch_size: int = option(1024, help="rows per training batch")
    warmup_epochs: int = option(5, help="epochs of linear KL warm-up (0 = none)")
    val_fraction: float = option(0.1, help="fraction of rows held out for validation (seeded random split)")
    max_samples: int = option(0, metavar="N", help="use a random subset of N rows (0 = all)")
    seed: int = option(42, help="seed of the split, the shuffling and the weights")
    dropout: float = option(0.0, help="dropout after each hidden layer")
    patience: int = option(20, help="epochs without a better validation loss before the LR is cut")
    lr_factor: float = option(0.5, help="LR multiplier on a plateau")
    min_lr: float = option(1e-6, help="the LR is never cut below this")
    early_stopping: int = option(0, metavar="N", help="stop after N epochs without a better validation loss (0 = off)")
    resume: bool = option(False, help="continue the run in RUN_DIR (epoch, optimiser, LR, KL weight, best value); "
                                      "options that define the model or data must be unchanged")
    mixed_precision: bool = option(False, help="float16 compute with float32 weights (GPU)")
    steps_per_epoch: int = option(0, metavar="N", help="batches per epoch (0 = one pass over the training rows)")
    workers: int = option(0, help="reader threads (0 = from the number of cores)")
    devices: int = option(1, metavar="N",
                          help="data-parallel training on N GPUs (tf.distribute.MirroredStrategy: each global batch of "
                               "--batch-size rows split across them); 0 = all visible GPUs")
    quiet: bool = option(False, help="no progress bars (the per-epoch lines remain)")
    kmers: str = option("1-6", metavar="A-B",  # contiguous range of k the model reads and reconstructs
                        help="model only the k-mer groups of k = A..B (e.g. 1-5: 692 inputs); the encoder records its "
                             "columns, so it still takes the full matrix")
    denoise: str = option("", metavar="MIN:MAX",
                          help="denoising: replace part of each training batch by the profile each sequence would show "
                               "if it were only L bp long (L log-uniform in MIN..MAX, below its length; k-mer counts "
                               "resampled), the target staying the clean profile (default: off)")
    denoise_fraction: float = option(0.5, metavar="F", help="share of each batch resampled with --denoise")
    contrast: float = option(0.0, metavar="W",
                             help="with --denoise: add W x a contrastive (InfoNCE) term that pulls each denoised row's "
                                  "z_mean towards its clean profile's and away from the batch's other rows "
                                  "(default 0: off)")
    contrast_temperature: float = option(3.0, metavar="T",
                                         help="temperature of --contrast, in units of the batch's mean squared "
                                              "latent distance (lower = sharper, dominated by the nearest rows)")
    contrast_exclude: int = option(0, metavar="K",
                                   help="leave each row's K nearest other rows of the batch (by clean input distance: "
                                        "mostly pieces of the same genome) out of its --contrast negatives "
                                        "(0: all rows are negatives)")
    contrast_noisy_negatives: bool = option(False, help="--contrast's negatives include the other rows' denoised "
                                                        "views, not only their clean profiles")
    bn_momentum: float = option(0.0, metavar="M",
                                help="BatchNorm momentum (0 = 1 - 2/steps per epoch within [0.5, 0.99], so that "
                                     "validation, which uses the moving statistics, tracks training on small runs; "
                                     "Keras' default is 0.99)")
    group_weights: str = option("", metavar="K=W[,K=W...]",
                                help="weights of each k-mer group's squared errors in the reconstruction loss, e.g. "
                                     "6=0.2 (unnamed groups: 1; all 1 = the plain sum of squared errors)")

    def __post_init__(self) -> None:
        check_non_negative(self, "max_samples", "early_stopping", "steps_per_epoch", "workers")
        self.hidden = tuple(self.hidden)

    def group_weight_map(self) -> dict[int, float]:
        """--group-weights as {k: weight}; ValueError with a one-line reason."""
        out: dict[int, float] = {}
        for part in filter(None, (p.strip() for p in self.group_weights.split(","))):
            k, eq, w = part.partition("=")
            try:
                k_i, w_f = int(k), float(w)
            except ValueError:
                raise ValueError(f"expected K=W[,K=W...] (e.g. 6=0.2), got {self.group_weights!r}") from None
            if not eq or not 1 <= k_i <= 6 or not (w_f >= 0 and math.isfinite(w_f)):
                raise ValueError(f"expected K=W with K in 1..6 and a weight >= 0 (e.g. 6=0.2), got {part!r}")
            if k_i in out:
                raise ValueError(f"k = {k_i} is given twice")
            out[k_i] = w_f
        lo, hi = parse_k_range(self.kmers)
        outside = sorted(k for k in out if not lo <= k <= hi)
        if outside:
            raise ValueError(f"k = {', '.join(map(str, outside))} is not modelled (--kmers {self.kmers})")
        if all(out.get(k, 1.0) == 0 for k in range(lo, hi + 1)):
            raise ValueError("every modelled group has weight 0: nothing would be reconstructed")
        return out

    @property
    def columns(self) -> list[int] | None:
        """Feature columns of --kmers (None = all 2772)."""
        lo, hi = parse_k_range(self.kmers)
        return None if (lo, hi) == (1, 6) else feature_columns(range(lo, hi + 1)).tolist()

    def denoiser(self) -> Denoiser | None:
        """The training batches' denoiser of --denoise (None when off)."""
        if not self.denoise:
            return None
        lo, hi = parse_length_range(self.denoise)
        klo, khi = parse_k_range(self.kmers)
        return Denoiser(lo, hi, self.denoise_fraction, self.seed, tuple(range(khi, klo - 1, -1)))


#: Options a resumed run must keep (they define the model, the data or the split).
LOCKED = ("latent", "hidden", "beta", "dropout", "batch_size", "warmup_epochs", "val_fraction", "max_samples",
          "seed", "lr", "mixed_precision", "kmers", "denoise", "denoise_fraction", "contrast",
          "contrast_temperature", "contrast_exclude", "contrast_noisy_negatives", "bn_momentum", "group_weights")
#: Options a resumed run takes from the command line when given, else from the run.
TUNABLE = ("epochs", "patience", "lr_factor", "min_lr", "early_stopping", "steps_per_epoch")
_DEFAULTS = TrainOptions()


def bn_momentum_for(steps_per_epoch: int) -> float:
    """BatchNorm momentum for an epoch of ``steps_per_epoch`` batches: 1 - 2/steps, within [0.5, 0.99].

    Validation runs in inference mode, on BatchNorm's moving statistics. With
    Keras' 0.99 those average over ~100 batches; when an epoch has only a few
    (7k rows: 6 of 1024), they still remember the first epochs' weights for
    many epochs, and the validation loss is several times the training loss
    (measured in VAE.md). An averaging window of half an epoch leaves
    exp(-2) = 14 % weight on statistics older than the epoch at its end; at
    least 2 batches (>= 2k rows by default) keep the estimates steady, and runs
    of >= 200 steps an epoch keep Keras' 0.99.
    """
    return float(min(0.99, max(0.5, 1.0 - 2.0 / max(1, steps_per_epoch))))


def kl_weight_for_epoch(epoch: int, beta: float, warmup_epochs: int) -> float:
    """KL weight of 0-based ``epoch``: beta * epoch / warmup during the warm-up epochs, then beta."""
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return float(beta)
    return float(beta) * epoch / warmup_epochs


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the run folder's state was reported."""


@dataclass
class TrainerState:
    """What a resumed run needs beyond the model and optimiser weights (``resume/state.json``)."""

    epoch: int = 0  # epochs completed
    batches: int = 0  # training batches consumed (the data stream resumes after them)
    lr: float = 0.0
    best_val: float | None = None  # best val loss since warm-up ended
    best_epoch: int = 0  # 1-based epoch of best_val (0 = none yet)
    plateau_wait: int = 0  # epochs without improvement since the last improvement or LR cut
    session: int = 0  # 0 for the first run, +1 per resume
    model: str = ""  # file name of the checkpoint in resume/
    finished: bool = False
    # The random generators' states ({layer name: [[seed, counter], ...]}): the Sampling and Dropout layers'
    # SeedGenerators are not saved with the model, and an exact resume needs them (issue 10).
    rng: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        d = json.loads(text)
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def rng_states(model) -> dict:
    """The states of the SeedGenerators of every layer of ``model``, by layer name (JSON-ready)."""
    out = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        gens = getattr(layer, "_seed_generators", None) or []
        if gens:
            out[layer.name] = [np.asarray(g.state.numpy()).tolist() for g in gens]
    return out


def set_rng_states(model, states: dict) -> None:
    """Restore what :func:`rng_states` recorded (layers are matched by name)."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        gens = getattr(layer, "_seed_generators", None) or []
        for g, value in zip(gens, states.get(layer.name, [])):
            g.state.assign(np.asarray(value, dtype=g.state.dtype))


@dataclass
class EpochOutcome:
    is_best: bool
    new_lr: float
    stop: bool
    tracking: bool  # False during warm-up: the epoch is not compared


def end_of_epoch(state: TrainerState, epoch: int, val_loss: float, opts: TrainOptions) -> EpochOutcome:
    """Update best/plateau/early-stopping trackers after 0-based ``epoch``; warm-up epochs are ignored.

    When warm-up ends the trackers start afresh: a near-zero-KL warm-up epoch
    would otherwise stay "best" forever.
    """
    lr = state.lr
    if epoch < opts.warmup_epochs:
        return EpochOutcome(False, lr, False, False)
    if epoch == opts.warmup_epochs:
        state.best_val, state.best_epoch, state.plateau_wait = None, 0, 0
    is_best = math.isfinite(val_loss) and (state.best_val is None or val_loss < state.best_val)
    if is_best:
        state.best_val, state.best_epoch, state.plateau_wait = float(val_loss), epoch + 1, 0
    else:
        state.plateau_wait += 1
        if state.plateau_wait >= opts.patience:
            lr = max(state.lr * opts.lr_factor, opts.min_lr)
            state.plateau_wait = 0
    stop = bool(opts.early_stopping) and state.best_epoch > 0 and (epoch + 1 - state.best_epoch) >= opts.early_stopping
    state.lr = lr
    return EpochOutcome(is_best, lr, stop, True)


def group_mse(x: np.ndarray, reconstruction: np.ndarray, columns=None) -> tuple[float, dict[int, float]]:
    """Mean squared error over all modelled features and per k-mer group (keys 6..1) of CLR rows.

    ``x``: the full 2772 CLR features; ``reconstruction``: those of ``columns``
    (None = all). Groups the model does not reconstruct are NaN.
    """
    cols = np.arange(N_FEATURES) if columns is None else np.asarray(columns)
    sq = np.square(np.asarray(x, np.float64)[:, cols] - np.asarray(reconstruction, np.float64))
    where = groups_in(cols)
    return float(sq.mean()), {k: float(sq[:, where[k]].mean()) if k in where else math.nan for k in K_ORDER}


# --------------------------------------------------------------------------- small utilities


class _Log:
    """Lines to stderr and to RUN_DIR/train.log (appended, flushed line by line)."""

    def __init__(self, path: str | None):
        self.fh = open(path, "a", encoding="utf-8") if path else None

    def open(self, path: str) -> None:
        if self.fh is None:
            self.fh = open(path, "a", encoding="utf-8")

    def __call__(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if self.fh is not None:
            self.fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


@contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C while checkpoints are written; raise it once they are complete."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def _atomic_save(model, path: str) -> None:
    # Keras insists on the .keras suffix, so the temporary name keeps it.
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)


def _atomic_copy(src: str, dst: str) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def save_models(vae, folder: str) -> None:
    """Save the full VAE (with optimiser), its encoder and decoder into ``folder`` as .keras."""
    os.makedirs(folder, exist_ok=True)
    _atomic_save(vae, os.path.join(folder, VAE_NAME))
    _atomic_save(vae.encoder, os.path.join(folder, KERAS_NAME))
    _atomic_save(vae.decoder, os.path.join(folder, DECODER_NAME))


def _write_json(path: str, obj: dict) -> None:
    with atomic_text(path) as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")


def _versions() -> dict:
    keras = import_keras()
    tf = import_tensorflow()

    return {"kmer_vae": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "tensorflow": tf.__version__, "keras": keras.__version__}


def _auto_workers() -> int:
    # Reads are cheap syscalls; a few threads keep a CPU model fed, more help a GPU.
    return max(2, min(8, n_threads() // 2))


# --------------------------------------------------------------------------- run folder


def _check_hyperparameters(o: TrainOptions) -> None:
    checks = [
        (o.latent >= 1, f"--latent must be >= 1, got {o.latent}"),
        (len(o.hidden) >= 1 and all(h >= 1 for h in o.hidden), f"--hidden widths must be >= 1, got {list(o.hidden)}"),
        (o.beta >= 0, f"--beta must be >= 0, got {o.beta}"),
        (o.epochs >= 1, f"--epochs must be >= 1, got {o.epochs}"),
        (o.lr > 0, f"--lr must be > 0, got {o.lr}"),
        (o.batch_size >= 1, f"--batch-size must be >= 1, got {o.batch_size}"),
        (o.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {o.warmup_epochs}"),
        (0 < o.val_fraction < 1, f"--val-fraction must be between 0 and 1 (exclusive), got {o.val_fraction}"),
        (o.max_samples >= 0, f"--max-samples must be >= 0, got {o.max_samples}"),
        (0 <= o.dropout < 1, f"--dropout must be in [0, 1), got {o.dropout}"),
        (o.patience >= 1, f"--patience must be >= 1, got {o.patience}"),
        (0 < o.lr_factor < 1, f"--lr-factor must be between 0 and 1, got {o.lr_factor}"),
        (o.min_lr >= 0, f"--min-lr must be >= 0, got {o.min_lr}"),
        (o.early_stopping >= 0, f"--early-stopping must be >= 0, got {o.early_stopping}"),
        (o.steps_per_epoch >= 0, f"--steps-per-epoch must be >= 0, got {o.steps_per_epoch}"),
        (o.devices >= 0, f"--devices must be >= 0, got {o.devices}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise InputError(msg)
    try:
        parse_k_range(o.kmers)
    except ValueError as e:
        raise InputError(f"--kmers: {e}") from None
    if o.denoise:
        try:
            parse_length_range(o.denoise)
        except ValueError as e:
            raise InputError(f"--denoise: {e}") from None
    try:
        o.group_weight_map()
    except ValueError as e:
        raise InputError(f"--group-weights: {e}") from None
    if not 0 <= o.bn_momentum < 1:
        raise InputError(f"--bn-momentum must be in [0, 1) (0 = from the steps per epoch), got {o.bn_momentum}")
    if not 0 < o.denoise_fraction <= 1:
        raise InputError(f"--denoise-fraction must be in (0, 1], got {o.denoise_fraction}")
    if not o.denoise and o.denoise_fraction != _DEFAULTS.denoise_fraction:
        raise InputError("--denoise-fraction needs --denoise MIN:MAX")
    if not (o.contrast >= 0 and math.isfinite(o.contrast)):
        raise InputError(f"--contrast must be >= 0, got {o.contrast}")
    if not (o.contrast_temperature > 0 and math.isfinite(o.contrast_temperature)):
        raise InputError(f"--contrast-temperature must be > 0, got {o.contrast_temperature}")
    if o.contrast_exclude < 0:
        raise InputError(f"--contrast-exclude must be >= 0, got {o.contrast_exclude}")
    if o.contrast_exclude > 0 and not o.contrast > 0:
        raise InputError("--contrast-exclude needs --contrast W > 0")
    if o.contrast_noisy_negatives and not o.contrast > 0:
        raise InputError("--contrast-noisy-negatives needs --contrast W > 0")
    if o.contrast_exclude >= o.batch_size - 1:
        raise InputError(f"--contrast-exclude {o.contrast_exclude} leaves no negatives in a batch of {o.batch_size}")
    if o.contrast > 0 and not o.denoise:
        raise InputError("--contrast needs --denoise MIN:MAX (its pairs are a denoised row and its clean profile)")


def _hyperparameters(o: TrainOptions) -> dict:
    d = dataclasses.asdict(o)
    for k in ("input", "run_dir", "resume", "quiet", "workers", "devices"):
        d.pop(k)
    d["hidden"] = list(o.hidden)
    return d


def _prepare_fresh_dir(run_dir: str) -> None:
    """Fail clearly when RUN_DIR holds something or cannot be created; create nothing yet."""
    if os.path.exists(run_dir):
        if not os.path.isdir(run_dir):
            raise InputError(f"{run_dir}: exists and is not a folder")
        entries = [e for e in os.listdir(run_dir) if not e.startswith(".")]
        if entries:
            what = "a train_vae run" if os.path.exists(RunFolder(run_dir).config) else "other files"
            raise InputError(f"{run_dir} already holds {what}; continue it with --resume or choose another -o")
        if not os.access(run_dir, os.W_OK | os.X_OK):
            raise InputError(f"{run_dir}: folder is not writable")
        return
    parent = os.path.dirname(os.path.abspath(run_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot create {run_dir}: {parent} is not a writable folder")


def _merge_resume(opts: TrainOptions, stored: dict) -> TrainOptions:
    """The options of a resumed run: the stored ones, with allowed changes from the command line."""
    hp = stored["hyperparameters"]
    merged = dataclasses.replace(opts)
    for name in LOCKED + TUNABLE:
        given, default = getattr(opts, name), getattr(_DEFAULTS, name)
        # Runs made before an option existed used its default.
        old = tuple(hp[name]) if name == "hidden" else hp.get(name, getattr(_DEFAULTS, name))
        if name == "hidden":
            given, default = tuple(given), tuple(default)
        if given == default or given == old:
            setattr(merged, name, old)
        elif name in LOCKED:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} {given if name != 'hidden' else ' '.join(map(str, given))} differs from the run's "
                             f"{old if name != 'hidden' else ' '.join(map(str, old))}: a resumed run keeps it "
                             "(drop the option, or start a new run with another -o)")
    return merged


# --------------------------------------------------------------------------- curves


def plot_curves(history_path: str, out_path: str, warmup_epochs: int, monitor_rows: int = MONITOR_ROWS) -> None:
    """Draw losses, KL and its weight, per-group MSE and the learning rate from ``history.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return

    def col(name: str) -> np.ndarray:
        return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows])

    ep = col("epoch")
    fig, ax = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    a = ax[0, 0]
    a.plot(ep, col("loss"), label="training loss (minimised)")
    a.plot(ep, col("val_loss"), label="validation loss")
    a.plot(ep, col("val_recon"), ":", label="validation reconstruction (SSE)")
    a.set_yscale("log")
    a.set_title("loss per sample")
    a = ax[0, 1]
    a.plot(ep, col("kl"), label="KL (training)")
    a.plot(ep, col("val_kl"), label="KL (validation)")
    a.set_title("KL divergence")
    b = a.twinx()
    b.plot(ep, col("kl_weight"), "k--", lw=1, label="KL weight")
    b.set_ylabel("KL weight")
    b.legend(loc="lower right", fontsize=8)
    a.legend(fontsize=8, loc="upper left")
    a = ax[1, 0]
    a.plot(ep, col("mse"), "k", lw=2, label="all")
    for k in K_ORDER:
        a.plot(ep, col(f"mse_{k}"), label=f"{k}-mers")
    a.set_yscale("log")
    a.set_title(f"MSE on {monitor_rows:,} fixed validation rows (decoded z_mean)")
    a = ax[1, 1]
    a.plot(ep, col("lr"))
    a.set_yscale("log")
    a.set_title("learning rate")
    for a in ax.flat:
        a.set_xlabel("epoch")
        if warmup_epochs > 0:
            a.axvline(warmup_epochs + 0.5, color="grey", lw=0.8, ls="--")
        if a is ax[0, 0] or a is ax[1, 0]:
            a.legend(fontsize=8, loc="upper right")
    fig.suptitle("train_vae (dashed line: end of KL warm-up)")
    with atomic_path(out_path, ".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    run_dir: str
    epochs_done: int
    best_epoch: int
    best_val: float | None
    history: list[dict] = field(default_factory=list)
    vae: object = None  # the trained keras model (final weights)


def _read_monitor_rows(reader: MatrixReader, val: np.ndarray, seed: int) -> np.ndarray:
    from .data import aligned_empty
    from .transform import clr

    n = min(MONITOR_ROWS, val.shape[0])
    rows = np.sort(np.random.default_rng([seed, 1]).choice(val, size=n, replace=False))
    buf = aligned_empty((n, reader.shape[1]), reader.dtype)
    reader.read(rows, buf)
    return clr(buf)


@dataclass
class Run:
    """An opened run (:func:`open_run`): options (a resume's merged in), folder, input, split, state and log."""

    opts: TrainOptions
    folder: RunFolder
    reader: MatrixReader
    split: Split
    stored: dict | None  # the config of the run being resumed (None: a new run)
    state: TrainerState | None  # the resumed run's state (None until the model is built)
    log: _Log
    strategy: object  # tf.distribute strategy of --devices, or None
    bn_momentum: float
    versions: dict
    monitor_rows: int = 0

    @property
    def n_train(self) -> int:
        return int(self.split.train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.split.val.shape[0])


def _read_stored_config(run_dir: str) -> dict:
    cfg_path = RunFolder(run_dir).config
    if not os.path.isfile(cfg_path):
        raise InputError(f"{run_dir}: nothing to resume (no {CONFIG_FILE}); start a run without --resume")
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            stored = json.load(fh)
        stored["hyperparameters"], stored["input"]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{cfg_path}: not a readable train_vae config ({e})") from None
    return stored


def open_run(opts: TrainOptions) -> Run:
    """Check everything, then open the run folder: a resumed run's config, state and split, or a new run's folder,
    split and config.json. Bad input raises InputError before anything is written."""
    if not opts.run_dir:
        raise InputError("no run folder given (-o)")
    folder = RunFolder(opts.run_dir)
    run_dir = folder.path
    stored: dict | None = None
    state: TrainerState | None = None
    if opts.resume:
        stored = _read_stored_config(run_dir)
        if not os.access(run_dir, os.W_OK | os.X_OK):
            raise InputError(f"{run_dir}: folder is not writable")
        opts = _merge_resume(opts, stored)
        if not opts.input:
            opts = dataclasses.replace(opts, input=stored["input"]["path"])
        state = _read_resume_state(run_dir)
    else:
        if not opts.input:
            raise InputError("no input matrix given (-i)")
        _prepare_fresh_dir(run_dir)
    _check_hyperparameters(opts)

    reader = MatrixReader(opts.input)
    n_rows = reader.n_rows
    if stored is not None:
        si = stored["input"]
        if [n_rows, reader.shape[1]] != list(si["shape"]) or reader.dtype.name != si["dtype"]:
            raise InputError(f"{opts.input}: shape {reader.shape} {reader.dtype} differs from the run's input "
                             f"{tuple(si['shape'])} {si['dtype']} ({si['path']}): not the same matrix")
        check_fingerprint(opts.input, si.get("fingerprint"), f"the run {run_dir}")
        split = load_split(run_dir)
        if split.n_rows != n_rows:
            raise InputError(f"{run_dir}/{SPLIT_FILE} is for {split.n_rows} rows, the input has {n_rows}")
    else:
        if n_rows < opts.batch_size:
            raise InputError(f"{opts.input}: {n_rows} rows, fewer than one batch (--batch-size {opts.batch_size})")
        split = make_split(n_rows, opts.val_fraction, opts.seed, opts.max_samples)
    n_train, n_val = split.train.shape[0], split.val.shape[0]
    if n_train < opts.batch_size:
        raise InputError(f"{opts.input}: {n_train} training rows (of {n_train + n_val} used), fewer than one batch "
                         f"(--batch-size {opts.batch_size}); lower --batch-size or --val-fraction")

    log = _Log(None)
    used = np.sort(np.concatenate([split.train, split.val])) if split.max_samples else None
    if not opts.quiet and (used.shape[0] if used is not None else n_rows) * reader.row_bytes > (1 << 30):
        from .progress import rows_bar

        with rows_bar(n_train + n_val, desc="checking values") as update:
            check_values(reader, used, progress=update)
    else:
        check_values(reader, used)

    strategy = device_strategy(opts.devices)  # imports TensorFlow; a bad --devices fails before anything is written

    # Input is good: from here on the run folder is written.
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {run_dir}: {e.strerror}") from None
    log.open(folder.log)
    versions = _versions()
    # Fixed when the model is built (a resumed run keeps its model's).
    bn_momentum = opts.bn_momentum or bn_momentum_for(opts.steps_per_epoch or n_train // opts.batch_size)
    if stored is None:
        split.save(folder.split)
        config = {
            "format": "kmer-vae train_vae run 1",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "input": {"path": os.path.abspath(opts.input), "shape": list(reader.shape), "dtype": reader.dtype.name,
                      "fingerprint": fingerprint(opts.input)},
            "hyperparameters": _hyperparameters(opts),
            "split": {"file": SPLIT_FILE, "seed": opts.seed, "val_fraction": opts.val_fraction,
                      "max_samples": opts.max_samples, "n_train": int(n_train), "n_val": int(n_val)},
            "model": {"input": "CLR of matrix columns 1..2772 per k-mer group, Jeffreys pseudocount 0.5/n_group",
                      "kmers": opts.kmers, "n_inputs": len(opts.columns or range(N_FEATURES)),
                      "bn_momentum": bn_momentum,
                      "encoder_outputs": ["z_mean", "z_log_var", "z"], "inference": "z_mean"},
            "versions": versions,
            "resumes": [],
        }
        _write_json(folder.config, config)
    return Run(opts, folder, reader, split, stored, state, log, strategy, bn_momentum, versions)


def build_or_load(run: Run):
    """The VAE of the run: a new one (seeded, compiled), or the resume checkpoint with its optimiser, LR and RNG
    states (then the config records the resume). Sets ``run.state``."""
    keras = import_keras()
    tf = import_tensorflow()

    from .model import build_vae

    opts, state = run.opts, run.state
    gpus = tf.config.list_physical_devices("GPU")
    if opts.mixed_precision:
        if not gpus:
            run.log("warning: --mixed-precision on a CPU is usually slower than float32")
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")

    # Variables created (or loaded) in the strategy's scope are mirrored on every device; fit() then splits each
    # global batch of the one reader across the replicas and sums their gradients.
    with run.strategy.scope() if run.strategy is not None else _no_scope():
        if state is not None:
            path = os.path.join(run.folder.resume, state.model)
            keras.utils.set_random_seed(opts.seed + state.epoch)
            try:
                vae = keras.saving.load_model(path)
            except Exception as e:  # Keras raises many types on a damaged file (ValueError, OSError, BadZipFile ...)
                msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise InputError(f"{path}: cannot load the resume checkpoint ({msg}); the run is unchanged") from None
            state.session += 1
            vae.optimizer.learning_rate.assign(state.lr)
            set_rng_states(vae, state.rng)
            # The run's config records the resume only once the checkpoint has loaded.
            config = run.stored
            config["hyperparameters"] = _hyperparameters(opts)
            config.setdefault("resumes", []).append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                     "at_epoch": state.epoch, "input": os.path.abspath(opts.input),
                                                     "versions": run.versions})
            _write_json(run.folder.config, config)
        else:
            keras.utils.set_random_seed(opts.seed)
            vae = build_vae(opts.latent, opts.hidden, opts.beta, opts.dropout, seed=opts.seed, raw_rows=True,
                            columns=opts.columns, bn_momentum=run.bn_momentum, group_weights=opts.group_weight_map(),
                            contrast=opts.contrast, contrast_temperature=opts.contrast_temperature,
                            contrast_exclude=opts.contrast_exclude,
                            contrast_noisy_negatives=opts.contrast_noisy_negatives)
            vae.compile(optimizer=keras.optimizers.Adam(learning_rate=opts.lr))
            run.state = TrainerState(lr=opts.lr, session=0)
    return vae


def fit(vae, run: Run) -> TrainResult:
    """Stream the rows and train up to ``--epochs`` (per-epoch checkpoints, history, best model: the callback).

    Ctrl-C raises :class:`TrainingInterrupted`; a non-finite loss an InputError (the last epoch stays resumable).
    """
    tf = import_tensorflow()
    opts, state, log, reader, split = run.opts, run.state, run.log, run.reader, run.split
    run_dir = run.folder.path
    workers = opts.workers or _auto_workers()
    plan = BatchPlan(split.train, opts.batch_size, shuffle=True, seed=opts.seed)
    steps = opts.steps_per_epoch or plan.steps
    train_stream = RowStream(reader, plan, workers=workers, denoiser=opts.denoiser())
    val_stream = RowStream(reader, BatchPlan(split.val, opts.batch_size, shuffle=False, drop_remainder=False),
                           workers=workers)
    # Keras needs the cardinality of a finite dataset, or it averages in a phantom step.
    val_ds = tf_dataset(val_stream, 0, 1).apply(tf.data.experimental.assert_cardinality(val_stream.steps))
    monitor = _read_monitor_rows(reader, split.val, opts.seed)
    run.monitor_rows = monitor.shape[0]

    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU ({', '.join(g.name for g in gpus)})" if gpus else "CPU"
    widths = "-".join(map(str, (len(opts.columns or range(N_FEATURES)), *opts.hidden, opts.latent)))
    if opts.columns is not None:
        widths += f" (k-mers {opts.kmers})"
    strategy = run.strategy
    if strategy is not None:
        device = (f"{strategy.num_replicas_in_sync} replicas (MirroredStrategy: "
                  f"{', '.join(strategy.extended.worker_devices)}; {opts.batch_size / strategy.num_replicas_in_sync:g} rows each a step)")
    verb = "resuming after epoch %d" % state.epoch if state.epoch else "starting"
    log(f"train_vae: {verb}; {opts.input} {reader.shape[0]:,} x {reader.shape[1]} {reader.dtype.name}; "
        f"{run.n_train:,} training / {run.n_val:,} validation rows (seed {opts.seed}); {steps:,} steps of {opts.batch_size} "
        f"an epoch; model {widths} ({vae.count_params():,} weights, BatchNorm momentum {_bn_of(vae):g}); beta {opts.beta} warmed up over "
        f"{opts.warmup_epochs} epochs; {device}; {workers} reader threads -> {run_dir}")
    if opts.denoise:
        log(f"train_vae: denoising: {opts.denoise_fraction:g} of each batch resampled as if {opts.denoise} bp long "
            "(log-uniform, below each row's length); the target stays the clean profile")

    result = TrainResult(run_dir, state.epoch, state.best_epoch, state.best_val)
    if state.epoch >= opts.epochs:
        log(f"train_vae: already trained {state.epoch} epochs (--epochs {opts.epochs}); raise --epochs to continue")
        return result
    train_ds = tf_dataset_from(train_stream, state.batches)
    state.finished = False
    cb = _epoch_callback(opts, state, run_dir, log, monitor, steps, result)
    try:
        vae.fit(train_ds, epochs=opts.epochs, initial_epoch=state.epoch, steps_per_epoch=steps,
                validation_data=val_ds, callbacks=[cb], verbose=0, shuffle=False)
    except KeyboardInterrupt:
        done = cb.state.epoch
        where = f"epoch {done} is saved in {run.folder.resume}" if done else "no epoch was completed"
        message = f"train_vae: interrupted during epoch {done + 1}; {where}: continue with train_vae -o {run_dir} --resume"
        log(message)
        log.close()
        raise TrainingInterrupted(message) from None
    finally:
        cb.close_bar()
    if cb.diverged:
        log.close()
        kept = f"{run.folder.resume} holds epoch {state.epoch}" if state.epoch else "no epoch was completed"
        raise InputError(f"training diverged in epoch {state.epoch + 1} (loss not finite): lower --lr; {kept}")
    return result


def finalise(vae, run: Run, result: TrainResult) -> TrainResult:
    """final/ models, the run's encoder.keras (the best, else the final), the finished state and the curves."""
    state, folder, log = run.state, run.folder, run.log
    with _deferred_interrupt():
        save_models(vae, folder.final)
        best_encoder = os.path.join(folder.best, KERAS_NAME)
        _atomic_copy(best_encoder if os.path.exists(best_encoder) else os.path.join(folder.final, KERAS_NAME),
                     folder.encoder)
        state.finished = True
        _write_state(folder.path, state)
        if os.path.exists(folder.history):
            plot_curves(folder.history, folder.curves, run.opts.warmup_epochs, run.monitor_rows)
    result.epochs_done, result.best_epoch, result.best_val = state.epoch, state.best_epoch, state.best_val
    result.vae = vae
    if state.best_epoch:
        log(f"train_vae: done after {state.epoch} epochs; best validation loss {state.best_val:.4f} at epoch "
            f"{state.best_epoch} -> {folder.encoder}")
    else:
        log(f"train_vae: done after {state.epoch} epochs, none after warm-up: {folder.encoder} is the final encoder")
    log.close()
    run.reader.close()
    return result


def train(opts: TrainOptions) -> TrainResult:
    """Train (or resume) a run as ``train_vae`` does. Bad input raises InputError before anything is written."""
    run = open_run(opts)
    vae = build_or_load(run)
    return finalise(vae, run, fit(vae, run))


def run(opts: TrainOptions) -> TrainResult | int:
    """``train_vae``: :func:`train` into ``opts.run_dir`` (default ``Models/vae-<date>-<time>``).

    Ctrl-C raises :class:`TrainingInterrupted` (a KeyboardInterrupt) saying where the last completed epoch is.
    A full disk is reported here (exit status 1), with what the run folder keeps for ``--resume``.
    """
    import errno

    from .paths import check_paths

    if opts.run_dir is None:
        if opts.resume:
            raise InputError("--resume needs the run folder: -o RUN_DIR")
        opts = dataclasses.replace(opts, run_dir=os.path.join("Models", time.strftime("vae-%Y%m%d-%H%M%S")))
    check_paths([opts.input], [], folders=[opts.run_dir])
    try:
        return train(opts)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        # Not "no output was written" (vae.cli.run's line): the run folder keeps its last completed epoch.
        print(f"train_vae: error: disk full while writing{' ' + str(e.filename) if e.filename else ''}; "
              f"{resume_note(opts.run_dir)}", file=sys.stderr)
        return 1


def resume_note(run_dir: str) -> str:
    """What a run folder holds for --resume, for messages after a failure."""
    try:
        with open(RunFolder(run_dir).state, encoding="utf-8") as fh:
            epoch = int(json.load(fh)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return "no epoch was completed"
    return f"{RunFolder(run_dir).resume} holds epoch {epoch}: free some space, then continue with train_vae -o {run_dir} --resume"


@contextmanager
def _no_scope() -> Iterator[None]:
    yield


def device_strategy(devices: int):
    """A ``tf.distribute.MirroredStrategy`` over ``devices`` devices, or None for one device (the plain path).

    0 = every visible GPU (one device without a GPU). Replicas are GPUs when there are any, else logical CPU
    devices (as the tests configure them); asking for more than are visible is an InputError.
    """
    import_keras()
    tf = import_tensorflow()

    gpus = tf.config.list_logical_devices("GPU")
    n = devices or max(1, len(gpus))
    if n == 1:
        return None
    pool = gpus or tf.config.list_logical_devices("CPU")
    if len(pool) < n:
        kind = "GPUs" if gpus else "GPUs (none visible) or logical CPU devices"
        raise InputError(f"--devices {n}: only {len(pool)} {kind} visible; use --devices 0 for all of them")
    names = [d.name for d in pool[:n]]
    # NCCL all-reduce is for GPUs; CPU replicas reduce through one device.
    ops = None if gpus else tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(devices=names, cross_device_ops=ops)


def _bn_of(vae) -> float:
    """The BatchNorm momentum of a (possibly loaded) model; NaN when it has none."""
    for layer in vae.encoder.layers:
        if hasattr(layer, "momentum") and hasattr(layer, "moving_mean"):
            return float(layer.momentum)
    return math.nan


def tf_dataset_from(stream: RowStream, batches_done: int):
    """The infinite training dataset, starting after ``batches_done`` batches of the stream."""
    epoch, skip = divmod(batches_done, stream.steps)
    return tf_dataset(stream, epoch, skip=skip)


def _read_resume_state(run_dir: str) -> TrainerState:
    """The state of the last completed epoch; refuses (one line) when it is missing or damaged, never restarts."""
    state_path = RunFolder(run_dir).state
    if not os.path.isfile(state_path):
        raise InputError(f"{run_dir}: no completed epoch to resume ({os.path.join(RESUME_DIR, STATE_FILE)} is missing); "
                         "start a new run with another -o (or remove this folder)")
    try:
        with open(state_path, encoding="utf-8") as fh:
            state = TrainerState.from_json(fh.read())
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"{state_path}: damaged resume state ({e}); start a new run with another -o") from None
    ckpt = os.path.join(run_dir, RESUME_DIR, state.model)
    if not state.model or not os.path.isfile(ckpt):
        raise InputError(f"{state_path}: its checkpoint {state.model or '(none)'} is missing from {RESUME_DIR}/; "
                         "start a new run with another -o")
    if not zipfile.is_zipfile(ckpt):
        raise InputError(f"{ckpt}: damaged or truncated checkpoint (not a .keras zip archive); start a new run with another -o")
    return state


def _write_state(run_dir: str, state: TrainerState) -> None:
    with atomic_text(RunFolder(run_dir).state) as fh:
        fh.write(state.to_json())


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "nan" if v is None or not math.isfinite(v) else format(v, spec)


def _epoch_callback(*args):
    """A Keras callback running :class:`_EpochLogic` (Keras is imported only when training starts)."""
    keras = import_keras()
    return type("EpochCallback", (_EpochLogic, keras.callbacks.Callback), {})(*args)


class _EpochLogic:
    """Warm-up, trackers, metrics, checkpoints and logs at epoch boundaries (mixed into a Keras callback)."""

    async_safe = True  # batch-end only counts steps: Keras may dispatch it without syncing

    def __init__(self, opts: TrainOptions, state: TrainerState, run_dir: str, log: _Log, monitor: np.ndarray,
                 steps: int, result: TrainResult):
        super().__init__()
        self.opts, self.state, self.run_dir, self.log = opts, state, run_dir, log
        self.monitor, self.steps, self.result = monitor, steps, result
        self._bar = None
        self._last_plot = -math.inf
        self.diverged = False
        self._t0 = self._t_train = 0.0

    # -- progress
    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(kl_weight_for_epoch(epoch, self.opts.beta, self.opts.warmup_epochs))
        self._t0 = time.perf_counter()
        self._t_train = 0.0
        if not self.opts.quiet:
            from tqdm import tqdm

            self._bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.opts.epochs}", unit="batch",
                             file=sys.stderr, leave=False, mininterval=1.0, dynamic_ncols=True,
                             disable=None)  # None: no bar when stderr is not a terminal

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)

    def on_test_begin(self, logs=None):
        if not self._t_train:
            self._t_train = time.perf_counter() - self._t0
        self.close_bar()

    # -- the epoch's end: everything written while Ctrl-C waits
    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.close_bar()
        if not math.isfinite(float(logs.get("loss", math.nan))):
            # Keep the last good checkpoint: nothing of this epoch is saved.
            self.diverged = True
            self.model.stop_training = True
            return
        t_train = self._t_train or (time.perf_counter() - self._t0)
        kl_weight = float(self.model.kl_weight.numpy())
        lr_used = float(self.model.optimizer.learning_rate.numpy())
        mse, per_group = self._monitor_mse()
        st = self.state
        st.lr = lr_used
        with _deferred_interrupt():
            out = end_of_epoch(st, epoch, float(logs.get("val_loss", math.nan)), self.opts)
            if out.new_lr != lr_used:
                self.model.optimizer.learning_rate.assign(out.new_lr)
            if out.is_best:
                folder = RunFolder(self.run_dir)
                save_models(self.model, folder.best)
                _atomic_copy(os.path.join(folder.best, KERAS_NAME), folder.encoder)
            st.epoch = epoch + 1
            st.batches += self.steps
            self._save_resume()
            epoch_s = time.perf_counter() - self._t0
            row = {
                "epoch": epoch + 1, "loss": logs.get("loss"), "recon": logs.get("recon"), "kl": logs.get("kl"),
                "kl_weight": kl_weight, "contrast": logs.get("contrast"), "val_loss": logs.get("val_loss"),
                "val_recon": logs.get("val_recon"), "val_kl": logs.get("val_kl"), "mse": mse, **{f"mse_{k}": per_group[k] for k in K_ORDER},
                "lr": lr_used, "samples_per_s": self.steps * self.opts.batch_size / max(t_train, 1e-9),
                "train_s": t_train, "epoch_s": epoch_s, "best": int(out.is_best), "session": st.session,
            }
            self._append_history(row)
            self.result.history.append(row)
            self.log(self._line(row, out))
            if time.perf_counter() - self._last_plot >= PLOT_INTERVAL:
                self._plot()
            if out.stop:
                self.log(f"train_vae: early stopping: no better validation loss for {self.opts.early_stopping} "
                         f"epochs since epoch {st.best_epoch}")
                self.model.stop_training = True

    def _monitor_mse(self) -> tuple[float, dict[int, float]]:
        ops = import_keras().ops

        enc, dec = self.model.encoder, self.model.decoder
        recon = np.concatenate([
            ops.convert_to_numpy(dec(enc(self.monitor[i : i + 1024], training=False)[0], training=False))
            for i in range(0, self.monitor.shape[0], 1024)
        ])
        return group_mse(self.monitor, recon, self.model.columns)

    def _save_resume(self) -> None:
        d = RunFolder(self.run_dir).resume
        os.makedirs(d, exist_ok=True)
        name = f"vae-epoch{self.state.epoch:05d}.keras"
        _atomic_save(self.model, os.path.join(d, name))
        self.state.model = name
        self.state.rng = rng_states(self.model)
        _write_state(self.run_dir, self.state)  # the atomic switch to the new checkpoint
        for old in glob.glob(os.path.join(d, "vae-epoch*.keras")):
            if os.path.basename(old) != name:
                os.unlink(old)

    def _append_history(self, row: dict) -> None:
        path = RunFolder(self.run_dir).history
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(HISTORY_COLUMNS)
            w.writerow(["" if row[c] is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                        for c in HISTORY_COLUMNS])
            fh.flush()
            os.fsync(fh.fileno())

    def _plot(self) -> None:
        try:
            plot_curves(RunFolder(self.run_dir).history, RunFolder(self.run_dir).curves,
                        self.opts.warmup_epochs, self.monitor.shape[0])
        except Exception as e:  # a plotting failure must not end a training run
            self.log(f"warning: could not draw {CURVES_FILE}: {e}")
        self._last_plot = time.perf_counter()

    def _line(self, r: dict, out: EpochOutcome) -> str:
        groups = " ".join(f"{k}:{_fmt(r[f'mse_{k}'])}" for k in K_ORDER)
        tag = ("  *best" if out.is_best else "") if out.tracking else "  (warm-up)"
        lr_note = f" -> {out.new_lr:.2e}" if out.new_lr != r["lr"] else ""
        return (f"epoch {r['epoch']}/{self.opts.epochs}  loss {_fmt(r['loss'], '.3f')} "
                f"(recon {_fmt(r['recon'], '.3f')} + {r['kl_weight']:.4g} x kl {_fmt(r['kl'], '.3f')}"
                + (f" + {self.opts.contrast:g} x contrast {_fmt(r['contrast'], '.3f')}" if self.opts.contrast else "")
                + ")  "
                f"val {_fmt(r['val_loss'], '.3f')}  mse {_fmt(r['mse'])} [{groups}]  lr {r['lr']:.2e}{lr_note}  "
                f"{r['samples_per_s']:,.0f} samples/s  {r['epoch_s']:.1f} s{tag}")
