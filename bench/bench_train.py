#!/usr/bin/env python3
"""Training benchmark (issue 3): does the streaming pipeline keep the model busy, and is memory flat in N?

Not a test: a script that prints Markdown tables.

``throughput``: samples/s of the same model (same weights, same optimiser)
trained on

* ``memory``: CLR features precomputed into one float32 array in RAM, fed by
  ``tf.data.Dataset.from_tensor_slices`` (what the original scripts did, and
  the best case for the model);
* ``memory-raw``: the raw rows in RAM, CLR in the compiled step (isolates the
  cost of the in-graph CLR from that of reading);
* ``stream``: the full ``train_vae`` pipeline: rows read from the `.npy` on disk
  in shuffled blocks by reader threads (:class:`vae.data.RowStream`), CLR in
  the compiled step (``VAE(raw_rows=True)``);
* ``stream-host-clr``: the same stream, the CLR done by NumPy in the reader
  threads instead (the alternative we did not choose);
* ``stream-pydataset``: the same reads and batches through
  ``keras.utils.PyDataset`` with worker threads instead of our thread pool
  and ``tf.data.Dataset.from_generator`` (the other alternative);

* ``stream-denoise`` (with ``--denoise MIN:MAX``): the ``train_vae --denoise``
  pipeline: the stream, part of each batch resampled as if shorter
  (:class:`vae.data.Denoiser`, NumPy in the reader threads), (noisy, clean)
  pairs; compared with the clean in-memory feeding, as the requirement is;

and, without a model, how fast the reader alone delivers rows. ``--kmers A-B``
trains the model of those groups (e.g. 1-5, 692 inputs) in every mode. Each mode's
model is traced once, then short rounds of each alternate, so that load from
other processes hits them alike; the table gives the best and the median round.

``rss``: peak RSS of the real ``train_vae`` command (a child process, read from
``os.wait4``) on matrices of 200k and 2M rows generated once on disk (float16
to halve the disk: 2M x 2773 x 2 B = 11 GB), with a bounded number of steps
per epoch (RSS is about what is held, not how long it runs) and the full
validation pass.

    python bench/bench_train.py                    # both, with the defaults below
    python bench/bench_train.py throughput --rows 40000 --steps 10 --rounds 8
    python bench/bench_train.py throughput --denoise 1000:50000 --kmers 1-5 --modes memory stream stream-denoise
    python bench/bench_train.py rss --dir /tmp/kmer-vae-bench
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from vae.kmers import FEATURE_SLICES, N_COLUMNS  # noqa: E402
from vae.matrix import NpyStreamWriter  # noqa: E402


def synthetic_matrix(path: str, n_rows: int, dtype: str = "float32", pool: int = 16384, seed: int = 0) -> None:
    """Write ``n_rows`` valid k-mer rows (each group sums to 1), cycling a random pool in shuffled order."""
    if os.path.exists(path):
        return
    rng = np.random.default_rng(seed)
    base = rng.random((pool, N_COLUMNS), dtype=np.float32) ** 3  # skewed, like real frequencies
    base[:, 0] = rng.integers(1000, 60000, pool)
    for sl in FEATURE_SLICES.values():
        g = base[:, 1 + sl.start : 1 + sl.stop]
        g /= g.sum(axis=1, keepdims=True)
    base = base.astype(dtype)
    with NpyStreamWriter(path, N_COLUMNS, dtype) as w:
        done = 0
        while done < n_rows:
            take = min(pool, n_rows - done)
            w.write(base[rng.permutation(pool)[:take]])
            done += take
        w.commit()


# --------------------------------------------------------------------------- throughput


def _timed_fit(vae, ds, steps: int) -> float:
    t = time.perf_counter()
    vae.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - t


def throughput(args) -> None:
    from vae.train import import_keras

    keras = import_keras()
    import tensorflow as tf

    from vae.data import BatchPlan, Denoiser, MatrixReader, RowStream, aligned_empty, make_split, parse_length_range, tf_dataset
    from vae.kmers import feature_columns, parse_k_range
    from vae.model import build_vae
    from vae.transform import clr

    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(args.dir, f"tp_{args.rows}_{args.dtype}.npy")
    synthetic_matrix(path, args.rows, args.dtype)
    reader = MatrixReader(path)
    split = make_split(reader.n_rows, 0.1, 42)
    plan = BatchPlan(split.train, args.batch_size, shuffle=True, seed=42)
    steps = min(args.steps, plan.steps)
    workers = args.workers
    # In memory: the training rows' CLR, float32, as the original held them.
    raw = aligned_empty((split.train.shape[0], N_COLUMNS), reader.dtype)
    reader.read(split.train, raw)
    x_mem = clr(raw)
    raw_mem = raw[:, :]  # the raw rows too, for "memory-raw"

    k_lo, k_hi = parse_k_range(args.kmers)
    columns = None if (k_lo, k_hi) == (1, 6) else feature_columns(range(k_lo, k_hi + 1)).tolist()
    n_in = len(columns) if columns else FEATURE_SLICES[1].stop
    denoiser = None
    if args.denoise:
        lo, hi = parse_length_range(args.denoise)
        denoiser = Denoiser(lo, hi, args.denoise_fraction, 42, tuple(range(k_hi, k_lo - 1, -1)))

    def model(raw_rows: bool):
        keras.utils.set_random_seed(0)
        vae = build_vae(args.latent, args.hidden, raw_rows=raw_rows, seed=0, columns=columns)
        vae.compile(optimizer=keras.optimizers.Adam(1e-4))
        return vae

    def ds_memory(x):
        return (tf.data.Dataset.from_tensor_slices(x).shuffle(8192, seed=0)
                .batch(args.batch_size, drop_remainder=True).repeat().prefetch(2))

    class BlockBatches(keras.utils.PyDataset):
        """The same batches as RowStream, through Keras' PyDataset and its worker threads (the alternative)."""

        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
            self.epoch = 0
            self.pieces = list(plan.epoch(0))

        def __len__(self):
            return plan.steps

        def __getitem__(self, i):
            rows = np.concatenate(self.pieces[i])
            out = aligned_empty((rows.shape[0], N_COLUMNS), reader.dtype)
            reader.read(rows, out)
            return out

        def on_epoch_end(self):
            self.epoch += 1
            self.pieces = list(plan.epoch(self.epoch))

    modes = {
        "memory": (False, lambda: ds_memory(x_mem)),
        "memory-raw": (True, lambda: ds_memory(raw_mem)),
        "stream": (True, lambda: tf_dataset(RowStream(reader, plan, workers=workers))),
        "stream-host-clr": (False, lambda: tf_dataset(RowStream(reader, plan, workers=workers, transform=clr))),
        "stream-pydataset": (True, BlockBatches),
    }
    if denoiser is not None:
        modes["stream-denoise"] = (True, lambda: tf_dataset(RowStream(reader, plan, workers=workers, denoiser=denoiser)))
    unknown = set(args.modes or ()) - set(modes)
    if unknown:
        raise SystemExit(f"unknown --modes {sorted(unknown)}; choose from {list(modes)}")
    if args.modes:
        modes = {m: modes[m] for m in modes if m in args.modes}
    if "memory" not in modes:
        raise SystemExit("--modes must include memory (the reference)")
    # Short rounds, modes interleaved: load from other processes then hits every mode
    # alike, and the best round of each is its least disturbed one.
    built = {name: (model(raw_rows), make_ds()) for name, (raw_rows, make_ds) in modes.items()}
    for vae, ds in built.values():
        _timed_fit(vae, ds, 3)  # tracing, first reads
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for rnd in range(args.rounds):
        for name, (vae, ds) in built.items():
            rates[name].append(steps * args.batch_size / _timed_fit(vae, ds, steps))
        print(f"  round {rnd + 1}: " + ", ".join(f"{m} {r[-1]:,.0f}" for m, r in rates.items()), file=sys.stderr)

    # Cost accounting, robust to load from other processes (best of many repeats of
    # each piece alone): a training step, the in-graph CLR, reading one batch.
    from vae.transform import clr_ops

    def best_of(fn, n=15) -> float:
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts)

    vae_mem = built["memory"][0]
    xb = tf.constant(x_mem[: args.batch_size])
    rb_rows = np.concatenate(next(iter(plan.epoch(0))))
    rb = aligned_empty((args.batch_size, N_COLUMNS), reader.dtype)
    reader.read(rb_rows, rb)
    raw_b = tf.constant(rb)
    clr_graph = tf.function(lambda a: clr_ops(a[:, 1:]))
    clr_graph(raw_b)
    costs = {
        "training step (CLR input in RAM)": best_of(lambda: vae_mem.train_on_batch(xb)),
        "CLR in the graph": best_of(lambda: clr_graph(raw_b).numpy()),
        "CLR in NumPy": best_of(lambda: clr(rb)),
        "reading the batch (preadv of 32 blocks)": best_of(lambda: reader.read(rb_rows, rb)),
    }
    if denoiser is not None:
        costs[f"denoising the batch ({denoiser.fraction:g} of it, one thread)"] = best_of(lambda: denoiser(rb, 0, 0))

    # The reader alone: how many rows/s the stream delivers through tf.data with no model to feed.
    reader_rates = {}
    for w in sorted({1, workers, 2 * workers}):
        it = iter(tf_dataset(RowStream(reader, plan, workers=w)))
        for _ in range(3):
            next(it)
        n_b = min(300, plan.steps * 5)
        t = time.perf_counter()
        for _ in range(n_b):
            next(it)
        reader_rates[w] = n_b * args.batch_size / (time.perf_counter() - t)
        del it

    load = os.getloadavg()[0]
    what = f", --denoise {args.denoise} --denoise-fraction {args.denoise_fraction:g}" if denoiser else ""
    print(f"\nthroughput: {args.rows:,} rows ({args.dtype}), model {n_in}-{'-'.join(map(str, args.hidden))}-{args.latent} "
          f"(k-mers {args.kmers}{what}), "
          f"batch {args.batch_size}, {args.rounds} interleaved rounds of {steps} steps per mode, "
          f"{workers} reader threads, {os.cpu_count()} cores, load average {load:.1f} at the end\n")
    print("| feeding | samples/s, best round | vs in-memory | samples/s, median | vs in-memory |")
    print("|---|---:|---:|---:|---:|")
    best_mem, med_mem = max(rates["memory"]), statistics.median(rates["memory"])
    for name, r in rates.items():
        print(f"| {name} | {max(r):,.0f} | {max(r) / best_mem:.0%} | {statistics.median(r):,.0f} | "
              f"{statistics.median(r) / med_mem:.0%} |")
    step = costs["training step (CLR input in RAM)"]
    print(f"\ncost per batch of {args.batch_size} (best of 15, each piece alone):\n")
    print("| piece | ms | vs the training step |")
    print("|---|---:|---:|")
    for name, c in costs.items():
        print(f"| {name} | {c * 1e3:.1f} | {c / step:.1%} |")
    print("\nthe stream alone (reader threads + tf.data, no model), page-cached matrix:\n")
    print("| reader threads | rows/s | GB/s |")
    print("|---:|---:|---:|")
    for w, rate in reader_rates.items():
        print(f"| {w} | {rate:,.0f} | {rate * reader.row_bytes / 1e9:.2f} |")


# --------------------------------------------------------------------------- RSS


def _peak_rss(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(peak RSS in MB, wall seconds, exit status) of a child process."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a full pipe would block the child
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            print(err.read().decode(errors="replace")[-2000:], file=sys.stderr)
    return ru.ru_maxrss / 1024, time.perf_counter() - t, code


def rss(args) -> None:
    os.makedirs(args.dir, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
    rows_out = []
    for n in args.sizes:
        path = os.path.join(args.dir, f"rss_{n}_{args.dtype}.npy")
        t = time.perf_counter()
        synthetic_matrix(path, n, args.dtype)
        print(f"  matrix {path}: {os.path.getsize(path) / 1e9:.1f} GB ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            run_dir = os.path.join(tmp, "run")
            cmd = [sys.executable, os.path.join(repo, "bin", "train_vae"), "-i", path, "-o", run_dir, "--quiet",
                   "--hidden", *map(str, args.hidden), "--latent", str(args.latent), "--epochs", str(args.epochs),
                   "--warmup-epochs", "1", "--steps-per-epoch", str(args.steps), "--batch-size", str(args.batch_size)]
            peak, wall, rc = _peak_rss(cmd, env)
        if rc != 0:
            raise SystemExit(f"train_vae failed on {path} (exit {rc})")
        rows_out.append((n, peak, wall))
        print(f"  {n:,} rows: peak RSS {peak:,.0f} MB, {wall:.0f} s", file=sys.stderr)
    print(f"\nrss: train_vae on {args.dtype} matrices, model 2772-{'-'.join(map(str, args.hidden))}-{args.latent}, "
          f"batch {args.batch_size}, {args.steps} steps/epoch x {args.epochs} epochs + full validation pass\n")
    print("| rows | matrix on disk | peak RSS | wall |")
    print("|---:|---:|---:|---:|")
    itemsize = np.dtype(args.dtype).itemsize
    for n, peak, wall in rows_out:
        print(f"| {n:,} | {n * N_COLUMNS * itemsize / 1e9:.1f} GB | {peak:,.0f} MB | {wall:.0f} s |")
    if len(rows_out) >= 2:
        print(f"\npeak RSS ratio {rows_out[-1][0]:,} / {rows_out[0][0]:,} rows: {rows_out[-1][1] / rows_out[0][1]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what")  # none: throughput, then rss, with their defaults
    t = sub.add_parser("throughput")
    t.add_argument("--rows", type=int, default=40000)
    t.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    t.add_argument("--hidden", type=int, nargs="+", default=[1024, 512])
    t.add_argument("--latent", type=int, default=384)
    t.add_argument("--batch-size", type=int, default=1024)
    t.add_argument("--steps", type=int, default=10, help="steps per round")
    t.add_argument("--rounds", type=int, default=8)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--kmers", default="1-6", help="k range of the model (train_vae --kmers)")
    t.add_argument("--denoise", default="", metavar="MIN:MAX", help="add the stream-denoise mode (train_vae --denoise)")
    t.add_argument("--denoise-fraction", type=float, default=0.5)
    t.add_argument("--modes", nargs="+", help="only these modes (memory is always the reference)")
    t.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "kmer-vae-bench"))
    r = sub.add_parser("rss")
    r.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    r.add_argument("--dtype", default="float16", choices=["float32", "float16"])
    r.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    r.add_argument("--latent", type=int, default=32)
    r.add_argument("--batch-size", type=int, default=1024)
    r.add_argument("--steps", type=int, default=50)
    r.add_argument("--epochs", type=int, default=2)
    r.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "kmer-vae-bench"))
    args = ap.parse_args()
    if args.what is None:
        throughput(t.parse_args([]))
        rss(r.parse_args([]))
    else:
        throughput(args) if args.what == "throughput" else rss(args)


if __name__ == "__main__":
    main()
