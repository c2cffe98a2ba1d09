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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from . import __version__
from .data import (SPLIT_FILE, BatchPlan, Denoiser, MatrixReader, RowStream, check_values, load_split, make_split,
                   parse_length_range, tf_dataset)
from .errors import InputError
from .kmers import K_ORDER, N_FEATURES, feature_columns, groups_in, parse_k_range
from .matrix import atomic_path, atomic_text

@contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence C-level stderr (TensorFlow's start-up banner ignores TF_CPP_MIN_LOG_LEVEL)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras():
    """Import TensorFlow and Keras without the C++ start-up chatter; returns the keras module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        with _quiet_fd2():
            import tensorflow  # noqa: F401
    import keras

    return keras


CONFIG_FILE = "config.json"
LOG_FILE = "train.log"
HISTORY_FILE = "history.csv"
CURVES_FILE = "training_curves.png"
RESUME_DIR = "resume"
STATE_FILE = "state.json"
BEST_DIR, FINAL_DIR = "best", "final"
#: Validation rows (a fixed, seeded sample) on which the per-group MSE is reported each epoch.
MONITOR_ROWS = 2048
#: The curves are redrawn at most this often (seconds), and at the end.
PLOT_INTERVAL = 10.0

HISTORY_COLUMNS = (
    ["epoch", "loss", "recon", "kl", "kl_weight", "val_loss", "val_recon", "val_kl", "mse"]
    + [f"mse_{k}" for k in K_ORDER]
    + ["lr", "samples_per_s", "train_s", "epoch_s", "best", "session"]
)


@dataclass
class TrainOptions:
    """Everything ``train_vae`` takes. These defaults are the command's defaults."""

    input: str | None = None
    run_dir: str | None = None
    latent: int = 384
    hidden: tuple[int, ...] = (1024, 512)
    beta: float = 0.05
    epochs: int = 100
    lr: float = 1e-4
    batch_size: int = 1024
    warmup_epochs: int = 5
    val_fraction: float = 0.1
    max_samples: int = 0
    seed: int = 42
    dropout: float = 0.0
    patience: int = 20
    lr_factor: float = 0.5
    min_lr: float = 1e-6
    early_stopping: int = 0
    resume: bool = False
    mixed_precision: bool = False
    steps_per_epoch: int = 0  # 0 = one pass over the training rows
    workers: int = 0  # 0 = chosen from the number of cores
    quiet: bool = False
    kmers: str = "1-6"  # contiguous range of k the model reads and reconstructs
    denoise: str = ""  # "MIN:MAX": part of each batch resampled as if MIN..MAX bp long ("" = off)
    denoise_fraction: float = 0.5  # share of each batch resampled when denoise is on

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
          "seed", "lr", "mixed_precision", "kmers", "denoise", "denoise_fraction")
#: Options a resumed run takes from the command line when given, else from the run.
TUNABLE = ("epochs", "patience", "lr_factor", "min_lr", "early_stopping", "steps_per_epoch")
_DEFAULTS = TrainOptions()


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

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        d = json.loads(text)
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


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
    _atomic_save(vae, os.path.join(folder, "vae.keras"))
    _atomic_save(vae.encoder, os.path.join(folder, "encoder.keras"))
    _atomic_save(vae.decoder, os.path.join(folder, "decoder.keras"))


def _write_json(path: str, obj: dict) -> None:
    with atomic_text(path) as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {"kmer_vae": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "tensorflow": tf.__version__, "keras": keras.__version__}


def _auto_workers() -> int:
    # Reads are cheap syscalls; a few threads keep a CPU model fed, more help a GPU.
    return max(2, min(8, (os.cpu_count() or 2) // 2))


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
    if not 0 < o.denoise_fraction <= 1:
        raise InputError(f"--denoise-fraction must be in (0, 1], got {o.denoise_fraction}")
    if not o.denoise and o.denoise_fraction != _DEFAULTS.denoise_fraction:
        raise InputError("--denoise-fraction needs --denoise MIN:MAX")


def _hyperparameters(o: TrainOptions) -> dict:
    d = dataclasses.asdict(o)
    for k in ("input", "run_dir", "resume", "quiet", "workers"):
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
            what = "a train_vae run" if os.path.exists(os.path.join(run_dir, CONFIG_FILE)) else "other files"
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


def train(opts: TrainOptions) -> TrainResult:
    """Train (or resume) a run as ``train_vae`` does. Bad input raises InputError before anything is written."""
    if not opts.run_dir:
        raise InputError("no run folder given (-o)")
    run_dir = opts.run_dir
    stored: dict | None = None
    state: TrainerState | None = None
    if opts.resume:
        cfg_path = os.path.join(run_dir, CONFIG_FILE)
        if not os.path.isfile(cfg_path):
            raise InputError(f"{run_dir}: nothing to resume (no {CONFIG_FILE}); start a run without --resume")
        try:
            with open(cfg_path, encoding="utf-8") as fh:
                stored = json.load(fh)
            stored["hyperparameters"], stored["input"]  # noqa: B018 - presence check
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{cfg_path}: not a readable train_vae config ({e})") from None
        if not os.access(run_dir, os.W_OK | os.X_OK):
            raise InputError(f"{run_dir}: folder is not writable")
        opts = _merge_resume(opts, stored)
        if not opts.input:
            opts = dataclasses.replace(opts, input=stored["input"]["path"])
        state_path = os.path.join(run_dir, RESUME_DIR, STATE_FILE)
        if os.path.isfile(state_path):
            with open(state_path, encoding="utf-8") as fh:
                state = TrainerState.from_json(fh.read())
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

    # Input is good: from here on the run folder is written.
    fresh = stored is None
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {run_dir}: {e.strerror}") from None
    log.open(os.path.join(run_dir, LOG_FILE))
    keras = import_keras()
    import tensorflow as tf

    from .model import build_vae

    versions = _versions()
    if fresh:
        split.save(os.path.join(run_dir, SPLIT_FILE))
        config = {
            "format": "kmer-vae train_vae run 1",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "input": {"path": os.path.abspath(opts.input), "shape": list(reader.shape), "dtype": reader.dtype.name},
            "hyperparameters": _hyperparameters(opts),
            "split": {"file": SPLIT_FILE, "seed": opts.seed, "val_fraction": opts.val_fraction,
                      "max_samples": opts.max_samples, "n_train": int(n_train), "n_val": int(n_val)},
            "model": {"input": "CLR of matrix columns 1..2772 per k-mer group, Jeffreys pseudocount 0.5/n_group",
                      "kmers": opts.kmers, "n_inputs": len(opts.columns or range(N_FEATURES)),
                      "encoder_outputs": ["z_mean", "z_log_var", "z"], "inference": "z_mean"},
            "versions": versions,
            "resumes": [],
        }
        _write_json(os.path.join(run_dir, CONFIG_FILE), config)
    else:
        config = stored
        config["hyperparameters"] = _hyperparameters(opts)
        config.setdefault("resumes", []).append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                 "at_epoch": state.epoch if state else 0,
                                                 "input": os.path.abspath(opts.input), "versions": versions})
        _write_json(os.path.join(run_dir, CONFIG_FILE), config)

    gpus = tf.config.list_physical_devices("GPU")
    if opts.mixed_precision:
        if not gpus:
            log("warning: --mixed-precision on a CPU is usually slower than float32")
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")

    if state is not None:
        path = os.path.join(run_dir, RESUME_DIR, state.model)
        keras.utils.set_random_seed(opts.seed + state.epoch)
        try:
            vae = keras.saving.load_model(path)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot load the resume checkpoint ({e})") from None
        state.session += 1
        vae.optimizer.learning_rate.assign(state.lr)
    else:
        keras.utils.set_random_seed(opts.seed)
        vae = build_vae(opts.latent, opts.hidden, opts.beta, opts.dropout, seed=opts.seed, raw_rows=True,
                        columns=opts.columns)
        vae.compile(optimizer=keras.optimizers.Adam(learning_rate=opts.lr))
        state = TrainerState(lr=opts.lr, session=0 if fresh else 1)

    workers = opts.workers or _auto_workers()
    plan = BatchPlan(split.train, opts.batch_size, shuffle=True, seed=opts.seed)
    steps = opts.steps_per_epoch or plan.steps
    train_stream = RowStream(reader, plan, workers=workers, denoiser=opts.denoiser())
    val_stream = RowStream(reader, BatchPlan(split.val, opts.batch_size, shuffle=False, drop_remainder=False),
                           workers=workers)
    # Keras needs the cardinality of a finite dataset, or it averages in a phantom step.
    val_ds = tf_dataset(val_stream, 0, 1).apply(tf.data.experimental.assert_cardinality(val_stream.steps))
    monitor = _read_monitor_rows(reader, split.val, opts.seed)

    device = f"GPU ({', '.join(g.name for g in gpus)})" if gpus else "CPU"
    widths = "-".join(map(str, (len(opts.columns or range(N_FEATURES)), *opts.hidden, opts.latent)))
    if opts.columns is not None:
        widths += f" (k-mers {opts.kmers})"
    verb = "resuming after epoch %d" % state.epoch if state.epoch else "starting"
    log(f"train_vae: {verb}; {opts.input} {reader.shape[0]:,} x {reader.shape[1]} {reader.dtype.name}; "
        f"{n_train:,} training / {n_val:,} validation rows (seed {opts.seed}); {steps:,} steps of {opts.batch_size} "
        f"an epoch; model {widths} ({vae.count_params():,} weights); beta {opts.beta} warmed up over "
        f"{opts.warmup_epochs} epochs; {device}; {workers} reader threads -> {run_dir}")
    if opts.denoise:
        log(f"train_vae: denoising: {opts.denoise_fraction:g} of each batch resampled as if {opts.denoise} bp long "
            "(log-uniform, below each row's length); the target stays the clean profile")

    result = TrainResult(run_dir, state.epoch, state.best_epoch, state.best_val)
    if state.epoch >= opts.epochs:
        log(f"train_vae: already trained {state.epoch} epochs (--epochs {opts.epochs}); raise --epochs to continue")
    else:
        train_ds = tf_dataset_from(train_stream, state.batches)
        state.finished = False
        cb = _epoch_callback(opts, state, run_dir, log, monitor, steps, result)
        try:
            vae.fit(train_ds, epochs=opts.epochs, initial_epoch=state.epoch, steps_per_epoch=steps,
                    validation_data=val_ds, callbacks=[cb], verbose=0, shuffle=False)
        except KeyboardInterrupt:
            done = cb.state.epoch
            where = (f"epoch {done} is saved in {os.path.join(run_dir, RESUME_DIR)}" if done
                     else "no epoch was completed")
            log(f"train_vae: interrupted during epoch {done + 1}; {where}: continue with "
                f"train_vae -o {run_dir} --resume")
            log.close()
            raise TrainingInterrupted from None
        finally:
            cb.close_bar()
        if cb.diverged:
            log.close()
            kept = (f"{os.path.join(run_dir, RESUME_DIR)} holds epoch {state.epoch}" if state.epoch
                    else "no epoch was completed")
            raise InputError(f"training diverged in epoch {state.epoch + 1} (loss not finite): lower --lr; {kept}")
    with _deferred_interrupt():
        save_models(vae, os.path.join(run_dir, FINAL_DIR))
        best_encoder = os.path.join(run_dir, BEST_DIR, "encoder.keras")
        _atomic_copy(best_encoder if os.path.exists(best_encoder) else os.path.join(run_dir, FINAL_DIR, "encoder.keras"),
                     os.path.join(run_dir, "encoder.keras"))
        state.finished = True
        _write_state(run_dir, state)
        hist = os.path.join(run_dir, HISTORY_FILE)
        if os.path.exists(hist):
            plot_curves(hist, os.path.join(run_dir, CURVES_FILE), opts.warmup_epochs, monitor.shape[0])
    result.epochs_done, result.best_epoch, result.best_val = state.epoch, state.best_epoch, state.best_val
    result.vae = vae
    if state.best_epoch:
        log(f"train_vae: done after {state.epoch} epochs; best validation loss {state.best_val:.4f} at epoch "
            f"{state.best_epoch} -> {os.path.join(run_dir, 'encoder.keras')}")
    else:
        log(f"train_vae: done after {state.epoch} epochs, none after warm-up: {os.path.join(run_dir, 'encoder.keras')} "
            "is the final encoder")
    log.close()
    reader.close()
    return result


def tf_dataset_from(stream: RowStream, batches_done: int):
    """The infinite training dataset, starting after ``batches_done`` batches of the stream."""
    epoch, skip = divmod(batches_done, stream.steps)
    return tf_dataset(stream, epoch, skip=skip)


def _write_state(run_dir: str, state: TrainerState) -> None:
    with atomic_text(os.path.join(run_dir, RESUME_DIR, STATE_FILE)) as fh:
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
                best = os.path.join(self.run_dir, BEST_DIR)
                save_models(self.model, best)
                _atomic_copy(os.path.join(best, "encoder.keras"), os.path.join(self.run_dir, "encoder.keras"))
            st.epoch = epoch + 1
            st.batches += self.steps
            self._save_resume()
            epoch_s = time.perf_counter() - self._t0
            row = {
                "epoch": epoch + 1, "loss": logs.get("loss"), "recon": logs.get("recon"), "kl": logs.get("kl"),
                "kl_weight": kl_weight, "val_loss": logs.get("val_loss"), "val_recon": logs.get("val_recon"),
                "val_kl": logs.get("val_kl"), "mse": mse, **{f"mse_{k}": per_group[k] for k in K_ORDER},
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
        from keras import ops

        enc, dec = self.model.encoder, self.model.decoder
        recon = np.concatenate([
            ops.convert_to_numpy(dec(enc(self.monitor[i : i + 1024], training=False)[0], training=False))
            for i in range(0, self.monitor.shape[0], 1024)
        ])
        return group_mse(self.monitor, recon, self.model.columns)

    def _save_resume(self) -> None:
        d = os.path.join(self.run_dir, RESUME_DIR)
        os.makedirs(d, exist_ok=True)
        name = f"vae-epoch{self.state.epoch:05d}.keras"
        _atomic_save(self.model, os.path.join(d, name))
        self.state.model = name
        _write_state(self.run_dir, self.state)  # the atomic switch to the new checkpoint
        for old in glob.glob(os.path.join(d, "vae-epoch*.keras")):
            if os.path.basename(old) != name:
                os.unlink(old)

    def _append_history(self, row: dict) -> None:
        path = os.path.join(self.run_dir, HISTORY_FILE)
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
            plot_curves(os.path.join(self.run_dir, HISTORY_FILE), os.path.join(self.run_dir, CURVES_FILE),
                        self.opts.warmup_epochs, self.monitor.shape[0])
        except Exception as e:  # a plotting failure must not end a training run
            self.log(f"warning: could not draw {CURVES_FILE}: {e}")
        self._last_plot = time.perf_counter()

    def _line(self, r: dict, out: EpochOutcome) -> str:
        groups = " ".join(f"{k}:{_fmt(r[f'mse_{k}'])}" for k in K_ORDER)
        tag = ("  *best" if out.is_best else "") if out.tracking else "  (warm-up)"
        lr_note = f" -> {out.new_lr:.2e}" if out.new_lr != r["lr"] else ""
        return (f"epoch {r['epoch']}/{self.opts.epochs}  loss {_fmt(r['loss'], '.3f')} "
                f"(recon {_fmt(r['recon'], '.3f')} + {r['kl_weight']:.4g} x kl {_fmt(r['kl'], '.3f')})  "
                f"val {_fmt(r['val_loss'], '.3f')}  mse {_fmt(r['mse'])} [{groups}]  lr {r['lr']:.2e}{lr_note}  "
                f"{r['samples_per_s']:,.0f} samples/s  {r['epoch_s']:.1f} s{tag}")
