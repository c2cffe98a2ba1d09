#!/usr/bin/env python3
"""Quality benchmark (issue 8): does the learned space beat PCA and raw CLR on genomes it never saw?

Not a test: a script that trains the ablation's recipes and prints Markdown tables (``tests/test_bench_quality.py``
runs its ``quick`` mode).

Design
------
* **Held out** (:data:`HELDOUT`): 12 genomes of ``../shared/data/genomes.tsv`` never used for training, chosen for
  their relation to the training set: a phylum with no other member (Fervidobacterium, Thermotogota), archaea
  (Methanobacterium sp. AL-21 and Pyrococcus furiosus with congeneric species in training; Methanothrix with only
  phylum relatives), genomes whose congeneric species is in training (Corynebacterium, Streptococcus, Chlamydia,
  Mycoplasmoides), genomes with only family (Salmonella, Cloacibacterium), class (Clavibacter) or phylum
  (Synechocystis) relatives. Every held-out genome has contigs >= 50 kb, so every length bin gets its fragments.
* **Training data** (``prepare``): random pieces of the other 80 genomes, as many per genome as its share of their
  bases (same number of rows, :data:`N_TRAIN`, for every piece-length scheme of :data:`PIECES`: fixed 5 kb,
  log-uniform 3-30 kb, log-uniform 1-50 kb), shuffled; written as k-mer matrices ``train_<scheme>.npy``.
* **Evaluation fragments**: per held-out genome :data:`N_QUERY` fragments in each length bin of :data:`BINS`
  (1-2, 2-5, 5-10, 10-50 kb; lengths log-uniform within the bin; seeded; every other fragment is
  reverse-complemented, as contigs come on either strand), and per training genome :data:`N_POOL` fragments per
  bin. Fragments with < 90 % A/C/G/T are redrawn. Counted by the library's kernel (``vae.kmers.profiles``), the
  code ``calculate_kmer_frequencies`` and ``embedding -i x.fa`` run.
* **Spaces**: each model is loaded with ``vae.embed.load_encoder`` and applied to the 2773-column rows with
  ``vae.embed.z_mean_of`` (what ``embedding`` computes); baselines on the same fragments in the same run: the CLR
  (``vae.transform.clr``) of the k <= 6, k <= 5 and k <= 4 groups (columns from ``vae.kmers.FEATURE_SLICES``), and
  PCA of each fitted on the training rows (the 1-50 kb training matrix, PCA_FIT rows), with 128 components and with
  each evaluated model's latent dimension when it differs. Euclidean metric throughout.
* **Metrics**, per length bin and pooled: k-NN label agreement (k = 1, 10) at genome, genus, family and phylum:
  the queries are the held-out fragments, the pool is every evaluation fragment but the query itself (held-out
  fragments of the same genome at any length, and fragments of the training genomes); a missing label (NA) never
  matches. k-means (k = number of held-out genomes, :data:`KMEANS_RESTARTS` seeded restarts) on the held-out
  fragments, scored by ARI and NMI against the genome; Leiden (``vae.cluster.leiden_clusters``, k = 15, SNN
  weights, resolution 1) ARI when that module exists, else ``n/a``.

Usage (work files under ``--work``, default :data:`DEFAULT_WORK`; nothing is written into the repository)::

    python bench/bench_quality.py prepare                 # fragments and training matrices (~5 min)
    python bench/bench_quality.py recipes                 # list the ablation's recipes (train_vae flags)
    python bench/bench_quality.py train k15-l128 --epochs 40   # train one recipe (log in WORK/runs/NAME.log)
    python bench/bench_quality.py train k15-l128 --epochs 12 -- --warmup-epochs 2   # + more train_vae flags
    python bench/bench_quality.py eval default k15-l128 /path/to/encoder.keras --name table1
    python bench/bench_quality.py quick --work /tmp/qb    # tiny synthetic end-to-end run (the test's mode)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, REPO)

from vae.embed import load_encoder, z_mean_of  # noqa: E402
from vae.errors import InputError  # noqa: E402
from vae.evaluate import _array_space, knn  # noqa: E402
from vae.fasta import iter_blocks, parse_block  # noqa: E402
from vae.kmers import FEATURE_SLICES, N_COLUMNS, count_valid, profiles  # noqa: E402
from vae.matrix import NpyStreamWriter, atomic_text, open_matrix  # noqa: E402
from vae.transform import clr  # noqa: E402

DEFAULT_WORK = "/work/scratch/quality-bench/work"
DEFAULT_DATA = os.path.join(REPO, os.pardir, "shared", "data")

#: Held-out genomes (file stem) and why each is there: its nearest relatives in the training set.
HELDOUT: dict[str, str] = {
    "Fervidobacterium_pennivorans_DSM9078": "only Thermotogota genome: no relative at any rank",
    "Salmonella_enterica_Typhimurium_LT2": "family (Escherichia, Shigella, Klebsiella)",
    "Corynebacterium_pseudotuberculosis_CIP52.97": "congeneric (C. glutamicum)",
    "Streptococcus_parasanguinis_GCA_002860845": "congeneric (S. pyogenes, S. mitis)",
    "Methanobacterium_sp_AL-21": "archaeon; congeneric (4 Methanobacterium)",
    "Pyrococcus_furiosus_DSM3638": "archaeon; congeneric (P. abyssi, P. horikoshii)",
    "Methanothrix_soehngenii_GP6": "archaeon; only phylum relatives (NCBI Methanobacteriota)",
    "Chlamydia_pneumoniae_TW-183": "congeneric (C. trachomatis)",
    "Mycoplasma_genitalium_G37": "congeneric (4 Mycoplasmoides), 32 % GC, 580 kb",
    "Cloacibacterium_caeni_Isolate2": "family (Elizabethkingia, Weeksellaceae)",
    "Clavibacter_michiganensis_LMG7333": "class (Corynebacterium, Mycobacterium)",
    "Synechocystis_sp_PCC6803": "phylum (Synechococcus PCC 7002)",
}
#: Evaluation length bins [lo, hi) in bp.
BINS: tuple[tuple[int, int], ...] = ((1000, 2000), (2000, 5000), (5000, 10000), (10000, 50000))
RANKS = ("genome", "genus", "family", "phylum")
KS = (1, 10)
N_QUERY = 60  # fragments per held-out genome and bin
N_POOL = 12  # fragments per training genome and bin
N_TRAIN = 24000  # training rows of each piece scheme
PCA_FIT = 24000
PCA_DIMS = (128,)
KMEANS_RESTARTS = 100  # 5, then 20, left the ARI of some spaces swinging by 0.1 between seeds (VAE.md)
LEIDEN = {"k": 15, "resolutions": (1.0,), "weight": "snn", "mutual": False}
MIN_ACGT = 0.9
SEED = 42
#: Training-piece schemes: (min, max) length, log-uniform; min == max is a fixed length.
PIECES: dict[str, tuple[int, int]] = {"5k": (5000, 5000), "3-30k": (3000, 30000), "1-50k": (1000, 50000)}
#: CLR baselines: name -> the k of the groups kept.
CLR_BASELINES: dict[str, tuple[int, ...]] = {"CLR k<=6": (1, 2, 3, 4, 5, 6), "CLR k<=5": (1, 2, 3, 4, 5),
                                             "CLR k<=4": (1, 2, 3, 4)}

_CONTRACT = ["--latent", "384", "--hidden", "1024", "512"]
_COMMON = ["--beta", "0.05", "--warmup-epochs", "5", "--batch-size", "256", "--lr", "5e-4", "--val-fraction", "0.1"]
_SMALL = ["--kmers", "1-5", "--latent", "128", "--hidden", "512", "256"]
_CHOSEN_WU2 = _SMALL + [{"0.05": "0.01", "5": "2"}.get(f, f) for f in _COMMON] + ["--denoise", "1000:4000",
                                                                               "--denoise-fraction", "0.8"]


@dataclass
class Recipe:
    pieces: str
    flags: list[str]
    about: str


#: The ablation: each recipe changes one thing from the one above it (train_vae flags besides -i/-o/--epochs/--seed).
RECIPES: dict[str, Recipe] = {
    "default": Recipe("5k", _CONTRACT + _COMMON, "today's Models/default recipe: 5-kbp pieces, LR 5e-4, batch 256"),
    "contract-3-30k": Recipe("3-30k", _CONTRACT + _COMMON, "contract model (2772-1024-512-384) on 3-30 kb pieces"),
    "contract-1-50k": Recipe("1-50k", _CONTRACT + _COMMON, "contract model on 1-50 kb pieces"),
    "k15-l128": Recipe("1-50k", _SMALL + _COMMON, "1-5-mers, latent 128, hidden 512 256, 1-50 kb pieces"),
    "k15-l128-dn": Recipe("1-50k", _SMALL + _COMMON + ["--denoise", "1000:10000", "--denoise-fraction", "0.8"],
                          "+ denoising: 80 % of each batch resampled to 1-10 kb"),
    "k15-l128-dn-do": Recipe("1-50k", _SMALL + _COMMON + ["--denoise", "1000:10000", "--denoise-fraction", "0.8",
                                                          "--dropout", "0.1"], "+ dropout 0.1"),
    "k15-l128-do": Recipe("1-50k", _SMALL + _COMMON + ["--dropout", "0.1"], "1-5-mers latent 128 + dropout 0.1"),
    "k15-l128-dn1-4": Recipe("1-50k", _SMALL + _COMMON + ["--denoise", "1000:4000", "--denoise-fraction", "0.8"],
                             "denoise 80 % to 1-4 kb"),
    "k15-l128-b01": Recipe("1-50k", _SMALL + [("0.01" if f == "0.05" else f) for f in _COMMON],
                           "1-5-mers latent 128 with beta 0.01 (KL weight 5x lower)"),
    "k15-l128-b002": Recipe("1-50k", _SMALL + [("0.002" if f == "0.05" else f) for f in _COMMON],
                            "1-5-mers latent 128 with beta 0.002"),
    "k15-l128-b01-dn1-4": Recipe("1-50k", _SMALL + [("0.01" if f == "0.05" else f) for f in _COMMON]
                                 + ["--denoise", "1000:4000", "--denoise-fraction", "0.8"], "beta 0.01 + denoise 80 % to 1-4 kb"),
    "k15-l128-b005-dn1-4": Recipe("1-50k", _SMALL + [("0.005" if f == "0.05" else f) for f in _COMMON]
                                  + ["--denoise", "1000:4000", "--denoise-fraction", "0.8"], "beta 0.005 + denoise 80 % to 1-4 kb"),
    "k15-l128-b01-dn1-4-f1": Recipe("1-50k", _SMALL + [("0.01" if f == "0.05" else f) for f in _COMMON]
                                    + ["--denoise", "1000:4000", "--denoise-fraction", "1.0"], "beta 0.01 + denoise every row to 1-4 kb"),
    "k15-l128-b01-dn1-4-do": Recipe("1-50k", _SMALL + [("0.01" if f == "0.05" else f) for f in _COMMON]
                                    + ["--denoise", "1000:4000", "--denoise-fraction", "0.8", "--dropout", "0.1"],
                                    "beta 0.01 + denoise 80 % to 1-4 kb + dropout 0.1"),
    # Session 3 (prepare --n-train 96000; 12 epochs of 86,400 rows instead of 30 of 21,600; VAE.md):
    "k15-l128-b01-dn1-4-wu2": Recipe("1-50k", _CHOSEN_WU2, "the chosen recipe with 2 warm-up epochs (for 12-epoch runs)"),
    "k15-h1024-b01-dn1-4-wu2": Recipe("1-50k", _CHOSEN_WU2 + ["--hidden", "1024", "512"],
                                      "the same with hidden 1024 512 (the last --hidden counts)"),
    "k15-l128-b01-dn1-4-ct": Recipe("1-50k", _CHOSEN_WU2 + ["--contrast", "1", "--contrast-temperature", "0.2"],
                                    "+ contrastive term (weight 1, temperature 0.2)"),
    "k15-l128-b01-dn1-4-ct-t1": Recipe("1-50k", _CHOSEN_WU2 + ["--contrast", "1", "--contrast-temperature", "1"],
                                       "+ contrastive term (weight 1, temperature 1)"),
    "k15-l128-b01-dn1-4-ct-t3": Recipe("1-50k", _CHOSEN_WU2 + ["--contrast", "1", "--contrast-temperature", "3"],
                                       "+ contrastive term (weight 1, temperature 3): the third session's default"),
    # Session 4: each row's nearest other rows of the batch (likely the same genome) are not its negatives.
    "k15-l128-b01-dn1-4-ct-x8": Recipe("1-50k", _CHOSEN_WU2 + ["--contrast", "1", "--contrast-temperature", "0.2",
                                                               "--contrast-exclude", "8"],
                                       "contrast at temperature 0.2 without each row's 8 nearest rows as negatives"),
    "k15-l128-b01-dn1-4-ct-x24": Recipe("1-50k", _CHOSEN_WU2 + ["--contrast", "1", "--contrast-temperature", "0.2",
                                                                "--contrast-exclude", "24"],
                                        "the same without the 24 nearest"),
    "k15-l128-b01-dn1-4-ct-t1-x8": Recipe("1-50k", _CHOSEN_WU2 + ["--contrast", "1", "--contrast-temperature", "1",
                                                                  "--contrast-exclude", "8"],
                                          "contrast at temperature 1 without each row's 8 nearest rows as negatives"),
    "k15-l128-b01-dn1-4-ct-w3": Recipe("1-50k", _CHOSEN_WU2 + ["--contrast", "3", "--contrast-temperature", "3"],
                                       "the ct-t3 recipe with contrast weight 3"),
    "k15-l128-b01-dn1-4-ctn-t3": Recipe("1-50k", _CHOSEN_WU2 + ["--contrast", "1", "--contrast-temperature", "3",
                                                                "--contrast-noisy-negatives"],
                                        "the ct-t3 recipe with the other rows' denoised views as negatives too"),
    "k15-l128-b01-dn1-4-ctn-x8": Recipe("1-50k", _CHOSEN_WU2 + ["--contrast", "1", "--contrast-temperature", "0.2",
                                                                "--contrast-noisy-negatives", "--contrast-exclude", "8"],
                                        "temperature 0.2, denoised views as negatives, 8 nearest rows excluded"),
    "k15-l128-b01-dn1-4-ctn-t1-x8": Recipe("1-50k", _CHOSEN_WU2 + ["--contrast", "1", "--contrast-temperature", "1",
                                                                   "--contrast-noisy-negatives",
                                                                   "--contrast-exclude", "8"],
                                           "temperature 1, denoised views as negatives, 8 nearest rows excluded: the shipped "
                                           "recipe"),
}


def _log(msg: str) -> None:
    print(msg, flush=True)  # flushed: runs go to log files for tens of minutes


# ---------------------------------------------------------------- genomes and fragments


def read_genome(path: str) -> tuple[np.ndarray, np.ndarray]:
    """2-bit codes of all records of a FASTA back to back, and each record's [start, stop) in them."""
    parts, bounds, pos = [], [], 0
    for buf in iter_blocks(path):
        block = parse_block(buf, path)
        for s, e in zip(block.seq_start.tolist(), block.seq_end.tolist()):
            parts.append(block.codes[s:e])
            bounds.append((pos, pos + e - s))
            pos += e - s
    codes = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return codes, np.asarray(bounds, dtype=np.int64).reshape(-1, 2)


def reverse_complement(codes: np.ndarray) -> np.ndarray:
    """Reverse complement of 2-bit codes (A0 C1 G2 T3; anything else, N, stays as it is)."""
    rc = codes[::-1].copy()
    acgt = rc < 4
    rc[acgt] = 3 - rc[acgt]
    return rc


def log_uniform(rng: np.random.Generator, lo: int, hi: int, n: int) -> np.ndarray:
    """``n`` integer lengths log-uniform in [lo, hi) (all ``lo`` when lo >= hi)."""
    if hi <= lo:
        return np.full(n, lo, dtype=np.int64)
    return np.minimum(np.exp(rng.uniform(math.log(lo), math.log(hi), n)).astype(np.int64), hi - 1)


def draw_pieces(codes: np.ndarray, bounds: np.ndarray, lengths: np.ndarray, rng: np.random.Generator,
                min_acgt: float = MIN_ACGT, tries: int = 20) -> list[tuple[int, int]]:
    """One random piece [start, stop) per wanted length, from a record long enough (chosen by its room), with at
    least ``min_acgt`` A/C/G/T; lengths that no record can hold (or that keep failing) are skipped."""
    rec_len = bounds[:, 1] - bounds[:, 0]
    out = []
    for length in lengths.tolist():
        room = np.maximum(rec_len - length + 1, 0).astype(np.float64)
        if room.sum() <= 0:
            continue
        for _ in range(tries):
            r = int(rng.choice(len(room), p=room / room.sum()))
            s = int(bounds[r, 0] + rng.integers(0, int(room[r])))
            ok = count_valid(codes, np.array([s]), np.array([s + length]))[0] >= min_acgt * length
            if ok:
                out.append((s, s + length))
                break
    return out


def count_pieces(codes: np.ndarray, pieces: Sequence[tuple[int, int]], strands: Sequence[int]) -> np.ndarray:
    """K-mer rows (n, 2773) of pieces of ``codes``; a piece with strand -1 is reverse-complemented first."""
    segs = [codes[a:b] if st > 0 else reverse_complement(codes[a:b]) for (a, b), st in zip(pieces, strands)]
    if not segs:
        return np.zeros((0, N_COLUMNS), np.float32)
    cat = np.concatenate(segs)
    stops = np.cumsum([len(s) for s in segs])
    return profiles(cat, stops - np.array([len(s) for s in segs]), stops)


def read_taxonomy(path: str) -> dict[str, dict[str, str | None]]:
    """genomes.tsv -> {file stem: {rank: label or None}}."""
    out = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            stem = r["file"].removesuffix(".fna.gz")
            out[stem] = {k: (None if (r.get(k) or "NA").strip() in ("", "NA") else r[k].strip())
                         for k in ("genus", "family", "order", "class", "phylum", "domain")}
    return out


# ---------------------------------------------------------------- prepare


@dataclass
class PrepareOptions:
    work: str = DEFAULT_WORK
    genomes: str = os.path.join(DEFAULT_DATA, "genomes")
    taxonomy: str = os.path.join(DEFAULT_DATA, "genomes.tsv")
    heldout: Sequence[str] = tuple(HELDOUT)
    bins: Sequence[tuple[int, int]] = BINS
    n_query: int = N_QUERY
    n_pool: int = N_POOL
    n_train: int = N_TRAIN
    pieces: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(PIECES))
    all_genomes_train: bool = False  # also write train_all_<scheme>.npy from every genome (the shipped model)
    seed: int = SEED


def _write_matrix(path: str, rows: np.ndarray) -> None:
    with NpyStreamWriter(path, N_COLUMNS) as w:
        w.write(rows)
        w.commit()


def _write_train(work: str, name: str, rows: list[np.ndarray], ids: list[str], seed: int, n: int) -> int:
    m = np.concatenate(rows)
    order = np.random.default_rng(seed).permutation(m.shape[0])[:n]
    _write_matrix(os.path.join(work, f"{name}.npy"), m[order])
    with atomic_text(os.path.join(work, f"{name}.txt")) as fh:
        fh.write("".join(ids[i] + "\n" for i in order.tolist()))
    return int(order.shape[0])


def prepare(opts: PrepareOptions, log: Callable[[str], None] = _log) -> dict:
    """Write the evaluation fragments (eval.npy + eval.tsv) and the training matrices under ``opts.work``."""
    os.makedirs(opts.work, exist_ok=True)
    tax = read_taxonomy(opts.taxonomy)
    files = {g: os.path.join(opts.genomes, g + ".fna.gz") for g in sorted(tax)}
    missing = [g for g in opts.heldout if g not in files]
    if missing:
        raise InputError(f"held-out genomes not in {opts.taxonomy}: {', '.join(missing)}")
    sizes = {}
    for f in files.values():
        if not os.path.exists(f):
            raise InputError(f"{f}: no such genome file")
    t0 = time.time()
    genomes = list(files)
    heldout = set(opts.heldout)
    # First pass: sizes (for the proportional training-piece counts).
    loaded = {}
    for g in genomes:
        codes, bounds = read_genome(files[g])
        loaded[g] = (codes, bounds)
        sizes[g] = int(codes.shape[0])
    train_genomes = [g for g in genomes if g not in heldout]
    eval_rows, eval_meta = [], []
    train_rows: dict[str, list[np.ndarray]] = {s: [] for s in opts.pieces}
    train_ids: dict[str, list[str]] = {s: [] for s in opts.pieces}
    all_rows: dict[str, list[np.ndarray]] = {s: [] for s in opts.pieces}
    all_ids: dict[str, list[str]] = {s: [] for s in opts.pieces}
    tot_train = sum(sizes[g] for g in train_genomes)
    tot_all = sum(sizes.values())
    for gi, g in enumerate(genomes):
        codes, bounds = loaded.pop(g)
        is_held = g in heldout
        # Independent, seeded streams per genome and purpose: adding a genome or a bin changes nothing else.
        for bi, (lo, hi) in enumerate(opts.bins):
            rng = np.random.default_rng([opts.seed, gi, bi, 1])
            n = opts.n_query if is_held else opts.n_pool
            pieces = draw_pieces(codes, bounds, log_uniform(rng, lo, hi, n), rng)
            strands = [1 if j % 2 == 0 else -1 for j in range(len(pieces))]
            eval_rows.append(count_pieces(codes, pieces, strands))
            for j, ((a, b), st) in enumerate(zip(pieces, strands)):
                eval_meta.append({"id": f"{g}|b{bi}|{j}", "genome": g, "heldout": int(is_held), "bin": bi,
                                  "length": b - a, "strand": "+" if st > 0 else "-", "start": a,
                                  **{r: tax[g][r] for r in RANKS[1:]}})
        for si, (scheme, (lo, hi)) in enumerate(opts.pieces.items()):
            targets = [(train_rows, train_ids, tot_train, opts.n_train)] if not is_held else []
            if opts.all_genomes_train:
                targets.append((all_rows, all_ids, tot_all, opts.n_train))
            for rows_d, ids_d, tot, n_total in targets:
                # 10 % more than the share, so the shuffled cut to n_train rows keeps proportions.
                n = max(1, round(1.1 * n_total * sizes[g] / tot))
                # Keyed by the scheme's place in PIECES, so `--schemes 1-50k` alone draws the same pieces.
                sid = list(PIECES).index(scheme) if scheme in PIECES else len(PIECES) + si
                rng = np.random.default_rng([opts.seed, gi, sid, 2 if rows_d is train_rows else 3])
                pieces = draw_pieces(codes, bounds, log_uniform(rng, lo, hi, n), rng)
                strands = rng.choice([1, -1], size=len(pieces)).tolist()
                rows_d[scheme].append(count_pieces(codes, pieces, strands))
                ids_d[scheme].extend(f"{g}|{a}-{b}" for a, b in pieces)
        log(f"  {g}: {sizes[g] / 1e6:.2f} Mbp{' (held out)' if is_held else ''} [{time.time() - t0:.0f} s]")
    m = np.concatenate(eval_rows)
    _write_matrix(os.path.join(opts.work, "eval.npy"), m)
    cols = ["id", "genome", "heldout", "bin", "length", "strand", "start", *RANKS[1:]]
    with atomic_text(os.path.join(opts.work, "eval.tsv")) as fh:
        fh.write("\t".join(cols) + "\n")
        for r in eval_meta:
            fh.write("\t".join("NA" if r[c] is None else str(r[c]) for c in cols) + "\n")
    counts = {}
    for scheme in opts.pieces:
        counts[f"train_{scheme}"] = _write_train(opts.work, f"train_{scheme}", train_rows[scheme], train_ids[scheme],
                                                 opts.seed, opts.n_train)
        if opts.all_genomes_train:
            counts[f"train_all_{scheme}"] = _write_train(opts.work, f"train_all_{scheme}", all_rows[scheme],
                                                         all_ids[scheme], opts.seed, opts.n_train)
    info = {"heldout": list(opts.heldout), "train_genomes": train_genomes, "bins": [list(b) for b in opts.bins],
            "n_query": opts.n_query, "n_pool": opts.n_pool, "eval_rows": int(m.shape[0]),
            "queries": int(sum(r["heldout"] for r in eval_meta)), "pieces": {k: list(v) for k, v in opts.pieces.items()},
            "train_rows": counts, "seed": opts.seed, "genomes": opts.genomes, "taxonomy": opts.taxonomy,
            "seconds": round(time.time() - t0, 1)}
    with atomic_text(os.path.join(opts.work, "prepare.json")) as fh:
        json.dump(info, fh, indent=1)
    log(f"prepared {m.shape[0]:,} evaluation fragments ({info['queries']:,} held-out queries), training rows "
        f"{counts} in {info['seconds']} s")
    return info


# ---------------------------------------------------------------- metrics


@dataclass
class EvalSet:
    """The evaluation fragments: rows (n, 2773) and, per row, integer labels per rank (-1-based unique for NA)."""

    rows: np.ndarray
    labels: dict[str, np.ndarray]
    heldout: np.ndarray  # bool
    bin: np.ndarray
    length: np.ndarray
    strand: np.ndarray
    genome: np.ndarray  # names


def read_eval(work: str) -> EvalSet:
    rows = np.asarray(open_matrix(os.path.join(work, "eval.npy"), mmap=False), dtype=np.float32)
    with open(os.path.join(work, "eval.tsv"), newline="", encoding="utf-8") as fh:
        meta = list(csv.DictReader(fh, delimiter="\t"))
    if len(meta) != rows.shape[0]:
        raise InputError(f"{work}: eval.npy has {rows.shape[0]} rows but eval.tsv {len(meta)}")
    genome = np.array([r["genome"] for r in meta])
    labels = {}
    for rank in RANKS:
        raw = [r[rank] for r in meta]
        # A missing label gets a code of its own per genome that no query shares: it never counts as a match.
        keyed = [v if v != "NA" else f"\x00NA:{g}" for v, g in zip(raw, genome)]
        _, codes = np.unique(np.array(keyed), return_inverse=True)
        codes = codes.astype(np.int64)
        na = np.array([v == "NA" for v in raw])
        codes[na] = -1 - np.arange(int(na.sum()))  # unique negative codes: NA matches nothing, not even NA
        labels[rank] = codes
    return EvalSet(rows, labels, np.array([r["heldout"] == "1" for r in meta]), np.array([int(r["bin"]) for r in meta]),
                   np.array([int(r["length"]) for r in meta]), np.array([r["strand"] for r in meta]), genome)


def knn_scores(vectors: np.ndarray, ev: EvalSet, bins: int, ks: Sequence[int] = KS,
               per_query: dict | None = None) -> dict:
    """k-NN label agreement of the held-out queries against the whole pool (query excluded), per bin and pooled.

    ``per_query``, when given, receives each measure's per-query shares (for :func:`paired_differences`).
    """
    q = np.flatnonzero(ev.heldout)
    nn = knn(vectors[q], _array_space("pool", vectors), max(ks), "euclidean", exclude=q)
    out: dict = {}
    for rank in RANKS:
        lab = ev.labels[rank]
        same = lab[nn] == lab[q][:, None]
        for k in ks:
            frac = same[:, :k].mean(axis=1)
            if per_query is not None:
                per_query[f"{rank}@{k}"] = frac
            out[f"{rank}@{k}"] = {"all": float(frac.mean()),
                                  **{str(b): float(frac[ev.bin[q] == b].mean()) for b in range(bins)
                                     if (ev.bin[q] == b).any()}}
    return out


def leiden_or_none() -> Callable | None:
    """``vae.cluster.leiden_clusters`` when that module exists (it lands with the clustering issue), else None."""
    try:
        from vae.cluster import leiden_clusters
    except ImportError:
        return None
    return leiden_clusters


def cluster_scores(vectors: np.ndarray, ev: EvalSet, bins: int, restarts: int = KMEANS_RESTARTS,
                   seed: int = SEED) -> dict:
    """k-means (k = held-out genomes) ARI/NMI and Leiden ARI of the held-out fragments against their genome."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from threadpoolctl import threadpool_limits

    leiden = leiden_or_none()
    q = np.flatnonzero(ev.heldout)
    truth = ev.labels["genome"][q]
    k = int(np.unique(truth).shape[0])
    out: dict = {"kmeans_ari": {}, "kmeans_nmi": {}, "leiden_ari": {}}
    for key, sel in [("all", np.ones(q.shape[0], bool))] + [(str(b), ev.bin[q] == b) for b in range(bins)]:
        if sel.sum() <= k:
            continue
        x = np.asarray(vectors[q[sel]], dtype=np.float32)
        # One OpenMP thread: on a shared 2-core box sklearn's threads spin against other processes (6x slower).
        with threadpool_limits(1):
            pred = KMeans(n_clusters=k, n_init=restarts, random_state=seed).fit_predict(x)
        out["kmeans_ari"][key] = float(adjusted_rand_score(truth[sel], pred))
        out["kmeans_nmi"][key] = float(normalized_mutual_info_score(truth[sel], pred))
        if leiden is not None:
            lab = np.asarray(leiden(x, k=LEIDEN["k"], resolutions=LEIDEN["resolutions"], weight=LEIDEN["weight"],
                                    mutual=LEIDEN["mutual"], seed=seed))[0]
            out["leiden_ari"][key] = float(adjusted_rand_score(truth[sel], lab))
        else:
            out["leiden_ari"][key] = None
    return out


def score_space(vectors: np.ndarray, ev: EvalSet, bins: int, restarts: int = KMEANS_RESTARTS, seed: int = SEED,
                per_query: dict | None = None) -> dict:
    return {**knn_scores(vectors, ev, bins, per_query=per_query), **cluster_scores(vectors, ev, bins, restarts, seed)}


#: Measures compared query by query against the best baseline, and the bootstrap draws of that comparison.
PAIRED_MEASURES = ("genome@10", "genus@10")
BOOTSTRAP_DRAWS = 2000


def paired_differences(model: np.ndarray, baseline: np.ndarray, groups: np.ndarray, bins: np.ndarray,
                       draws: int = BOOTSTRAP_DRAWS, seed: int = SEED) -> dict:
    """Mean per-query difference model - baseline, pooled and per bin, with a 95 % interval from a bootstrap
    that resamples whole groups (held-out genomes): queries of one genome are not independent.
    """
    rng = np.random.default_rng(seed)
    diff = np.asarray(model, np.float64) - np.asarray(baseline, np.float64)
    names, group = np.unique(groups, return_inverse=True)
    out: dict = {}
    for key, sel in [("all", np.ones(diff.shape[0], bool))] + [(str(b), bins == b) for b in np.unique(bins)]:
        sums = np.bincount(group[sel], weights=diff[sel], minlength=names.size)
        counts = np.bincount(group[sel], minlength=names.size).astype(np.float64)
        pick = rng.integers(0, names.size, size=(draws, names.size))
        boot = sums[pick].sum(axis=1) / np.maximum(counts[pick].sum(axis=1), 1.0)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out[key] = {"mean": float(diff[sel].mean()), "ci95": [float(lo), float(hi)]}
    return out


def clr_columns(ks: Sequence[int]) -> np.ndarray:
    """Feature-column indices (into the 2772 CLR features) of the groups ``ks``, from vae.kmers' layout."""
    return np.concatenate([np.arange(FEATURE_SLICES[k].start, FEATURE_SLICES[k].stop) for k in sorted(ks)])


def fit_pca(x_train: np.ndarray, dim: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, float]:
    """PCA (mean, components (dim, d), explained variance share) of training CLR features."""
    from sklearn.decomposition import PCA

    dim = min(dim, x_train.shape[0], x_train.shape[1])
    solver = "covariance_eigh" if x_train.shape[0] > x_train.shape[1] else "full"
    p = PCA(n_components=dim, svd_solver=solver, random_state=seed).fit(x_train)
    return p.mean_.astype(np.float32), p.components_.astype(np.float32), float(p.explained_variance_ratio_.sum())


def baseline_spaces(ev: EvalSet, train_matrix: str | None, dims: Sequence[int], fit_rows: int = PCA_FIT,
                    seed: int = SEED, log: Callable[[str], None] = _log) -> dict[str, np.ndarray]:
    """CLR k<=6/5/4 of the evaluation rows and PCA of each (fitted on ``train_matrix`` rows) at each dim."""
    x = clr(ev.rows)
    spaces = {name: np.ascontiguousarray(x[:, clr_columns(ks)]) for name, ks in CLR_BASELINES.items()}
    if train_matrix:
        tm = open_matrix(train_matrix)
        idx = np.arange(tm.shape[0])
        if idx.shape[0] > fit_rows:
            idx = np.sort(np.random.default_rng(seed).choice(idx, size=fit_rows, replace=False))
        xt = clr(np.asarray(tm[idx], dtype=np.float32))
        for name, ks in CLR_BASELINES.items():
            cols = clr_columns(ks)
            for d in sorted(set(dims)):
                t0 = time.time()
                mean, comp, evr = fit_pca(xt[:, cols], d, seed)
                spaces[f"PCA-{comp.shape[0]} of {name}"] = (x[:, cols] - mean) @ comp.T
                log(f"  PCA-{comp.shape[0]} of {name}: {evr:.3f} of the variance, {time.time() - t0:.0f} s")
    return spaces


def resolve_model(spec: str, work: str) -> tuple[str, str]:
    """(display name, encoder path) of a recipe name (its run in WORK/runs) or an encoder/run-folder path."""
    if spec in RECIPES or (not os.path.exists(spec) and os.path.isdir(os.path.join(work, "runs", spec))):
        return spec, os.path.join(work, "runs", spec)
    if os.path.exists(spec):
        name = os.path.basename(os.path.normpath(spec))
        if name.startswith("encoder."):
            name = os.path.basename(os.path.dirname(os.path.abspath(spec)))
        return name, spec
    raise InputError(f"{spec}: neither a recipe ({', '.join(RECIPES)}) nor an encoder path")


@dataclass
class EvalOptions:
    work: str = DEFAULT_WORK
    models: Sequence[str] = ()
    name: str = "results"
    engine: str = "numpy"
    baselines: bool = True
    pca_train: str | None = None  # default: WORK/train_1-50k.npy
    pca_dims: Sequence[int] = PCA_DIMS
    restarts: int = KMEANS_RESTARTS
    seed: int = SEED


def evaluate(opts: EvalOptions, log: Callable[[str], None] = _log) -> dict:
    """Score the models and the baselines on the evaluation fragments; write WORK/NAME.json and WORK/NAME.md."""
    t0 = time.time()
    ev = read_eval(opts.work)
    with open(os.path.join(opts.work, "prepare.json"), encoding="utf-8") as fh:
        info = json.load(fh)
    bins = len(info["bins"])
    spaces: dict[str, np.ndarray] = {}
    sources = {}
    dims = set(opts.pca_dims)
    for spec in opts.models:
        name, path = resolve_model(spec, opts.work)
        enc = load_encoder(path, opts.engine)
        spaces[name] = z_mean_of(enc, ev.rows)
        sources[name] = {"encoder": enc.source, "latent": int(enc.latent), "input_dim": int(enc.input_dim)}
        dims.add(int(enc.latent))
        log(f"  embedded {ev.rows.shape[0]:,} fragments with {name} ({enc.source}, latent {enc.latent})")
    if opts.baselines:
        pca_train = opts.pca_train or os.path.join(opts.work, "train_1-50k.npy")
        spaces.update(baseline_spaces(ev, pca_train if os.path.exists(pca_train) else None, sorted(dims),
                                      seed=opts.seed, log=log))
    results, per_query = {}, {}
    for name, v in spaces.items():
        t1 = time.time()
        per_query[name] = {}
        results[name] = score_space(np.asarray(v, np.float32), ev, bins, opts.restarts, opts.seed, per_query[name])
        log(f"  scored {name} ({v.shape[1]} dims) in {time.time() - t1:.0f} s")
    paired = {}
    baselines = [s for s in spaces if s not in sources]
    if baselines:
        q = np.flatnonzero(ev.heldout)
        for measure in PAIRED_MEASURES:
            best = max(baselines, key=lambda s: results[s][measure]["all"])
            paired[measure] = {"baseline": best, "models": {
                m: paired_differences(per_query[m][measure], per_query[best][measure], ev.genome[q], ev.bin[q],
                                      seed=opts.seed) for m in sources}}
    out = {"work": opts.work, "models": sources, "bins": info["bins"], "heldout": info["heldout"],
           "queries": int(ev.heldout.sum()), "pool": int(ev.rows.shape[0]), "ranks": list(RANKS), "ks": list(KS),
           "kmeans_restarts": opts.restarts, "leiden": LEIDEN if leiden_or_none() else None,
           "pca_fitted_on": opts.pca_train or "train_1-50k.npy", "seed": opts.seed, "spaces": results,
           "paired": paired, "seconds": round(time.time() - t0, 1)}
    with atomic_text(os.path.join(opts.work, opts.name + ".json")) as fh:
        json.dump(out, fh, indent=1, default=str)
    md = format_tables(out)
    with atomic_text(os.path.join(opts.work, opts.name + ".md")) as fh:
        fh.write(md + "\n")
    log(md)
    return out


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _bin_name(b: Sequence[int]) -> str:
    return f"{b[0] // 1000}-{b[1] // 1000} kb"


POOLED_COLUMNS = ("genome@1", "genome@10", "genus@10", "family@10", "phylum@10", "kmeans_ari", "kmeans_nmi", "leiden_ari")
BIN_COLUMNS = ("genome@10", "genus@10", "kmeans_ari", "leiden_ari")


def format_tables(r: dict) -> str:
    """Markdown: the pooled table, then one table per length bin; the best value of each column in bold."""
    def table(key: str, cols: Sequence[str]) -> list[str]:
        vals = {s: [r["spaces"][s][c].get(key) for c in cols] for s in r["spaces"]}
        best = [max((v[j] for v in vals.values() if v[j] is not None), default=None) for j in range(len(cols))]
        lines = ["| space | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for s, v in vals.items():
            cells = [("**" + _f(x) + "**") if x is not None and x == best[j] else _f(x) for j, x in enumerate(v)]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        return lines

    lines = [(f"Held-out queries: {r['queries']:,} fragments of {len(r['heldout'])} genomes; pool: {r['pool']:,} "
             f"fragments (held-out + training genomes); k-means k = {len(r['heldout'])}, {r['kmeans_restarts']} "
             f"restarts; Leiden: {'k=15 SNN, resolution 1' if r['leiden'] else 'n/a (vae.cluster absent)'}; "
             f"PCA fitted on {r['pca_fitted_on']}."), "", "Pooled over all lengths:", ""]
    lines += table("all", POOLED_COLUMNS)
    # One line per space: the target's measures pooled, then genome@10 and genus@10 per length bin.
    names = [_bin_name(b) for b in r["bins"]]
    cols = ["genome@10", "genus@10", "k-means ARI", "Leiden ARI"] + [f"genome@10 {n}" for n in names] + \
        [f"genus@10 {n}" for n in names]
    lines += ["", "Summary (pooled, then per length bin):", "", "| space | " + " | ".join(cols) + " |",
              "|---" * (len(cols) + 1) + "|"]
    for s, v in r["spaces"].items():
        vals = [v["genome@10"]["all"], v["genus@10"]["all"], v["kmeans_ari"].get("all"), v["leiden_ari"].get("all")]
        vals += [v["genome@10"].get(str(i)) for i in range(len(names))]
        vals += [v["genus@10"].get(str(i)) for i in range(len(names))]
        lines.append(f"| {s} | " + " | ".join(_f(x) for x in vals) + " |")
    for measure, p in r.get("paired", {}).items():
        lines += ["", f"{measure}, model minus the best baseline ({p['baseline']}), query by query; 95 % interval from "
                  f"{BOOTSTRAP_DRAWS:,} bootstrap draws of the held-out genomes:", "",
                  "| model | pooled | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        for m, d in p["models"].items():
            cells = [f"{d[k]['mean']:+.4f} [{d[k]['ci95'][0]:+.4f}, {d[k]['ci95'][1]:+.4f}]" if k in d else "n/a"
                     for k in ["all"] + [str(i) for i in range(len(names))]]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for i, b in enumerate(r["bins"]):
        lines += ["", f"{_bin_name(b)}:", ""] + table(str(i), BIN_COLUMNS)
    return "\n".join(lines)


# ---------------------------------------------------------------- train


def train_command(recipe: str, work: str, epochs: int, seed: int = SEED, extra: Sequence[str] = (),
                  input_matrix: str | None = None, out: str | None = None) -> list[str]:
    r = RECIPES[recipe]
    return [sys.executable, os.path.join(REPO, "bin", "train_vae"),
            "-i", input_matrix or os.path.join(work, f"train_{r.pieces}.npy"),
            "-o", out or os.path.join(work, "runs", recipe), *r.flags, "--epochs", str(epochs),
            "--seed", str(seed), "--quiet", *extra]


def train(recipe: str, work: str, epochs: int, seed: int = SEED, extra: Sequence[str] = (),
          input_matrix: str | None = None, out: str | None = None) -> int:
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r} (recipes: {', '.join(RECIPES)})")
    cmd = train_command(recipe, work, epochs, seed, extra, input_matrix, out)
    os.makedirs(os.path.join(work, "runs"), exist_ok=True)
    log_path = (out or os.path.join(work, "runs", recipe)).rstrip("/") + ".log"
    print(" ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.time()
    with open(log_path, "w") as fh:
        fh.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        fh.flush()
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        fh.write(f"exit {rc} after {time.time() - t0:.0f} s\n")
    print(f"exit {rc} after {time.time() - t0:.0f} s; log {log_path}")
    return rc


# ---------------------------------------------------------------- quick


def quick(work: str, log: Callable[[str], None] = _log, models: Sequence[str] = ()) -> dict:
    """A tiny end-to-end run on synthetic genomes (vae.simulate): 6 genomes in 3 genera, 2 held out."""
    from vae.simulate import random_genome, write_fasta

    gdir = os.path.join(work, "genomes")
    os.makedirs(gdir, exist_ok=True)
    tax_rows = []
    for i in range(6):
        g = f"G{i}"
        # Pairs of congeneric genomes: the same Markov chain at a near GC, so a genus shares composition.
        seq = random_genome(120_000, seed=100 + i // 2, gc=0.35 + 0.15 * (i // 2))
        rng = np.random.default_rng(i)
        mut = np.frombuffer(seq.encode(), np.uint8).copy()
        flip = rng.random(mut.shape[0]) < 0.05 * (i % 2)  # the second of a pair: 5 % point changes
        mut[flip] = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, int(flip.sum()))]
        write_fasta(os.path.join(gdir, g + ".fna.gz"), [(f"{g}_c1", mut.tobytes().decode())])
        tax_rows.append((g + ".fna.gz", f"genus{i // 2}", f"family{i // 4}", "class", f"phylum{i // 4}"))
    tsv = os.path.join(work, "genomes.tsv")
    with open(tsv, "w") as fh:
        fh.write("file\tgenus\tfamily\tclass\tphylum\n")
        fh.writelines("\t".join(r) + "\n" for r in tax_rows)
    prepare(PrepareOptions(work=work, genomes=gdir, taxonomy=tsv, heldout=("G1", "G5"),
                           bins=((1000, 2000), (5000, 10000)), n_query=12, n_pool=6, n_train=300,
                           pieces={"1-50k": (1000, 20000)}), log=log)
    return evaluate(EvalOptions(work=work, models=models, name="quick", restarts=2), log=log)


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=DEFAULT_WORK, help=f"work folder (default {DEFAULT_WORK})")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="evaluation fragments and training matrices")
    pp.add_argument("--n-train", type=int, default=N_TRAIN)
    pp.add_argument("--n-query", type=int, default=N_QUERY)
    pp.add_argument("--n-pool", type=int, default=N_POOL)
    pp.add_argument("--all-genomes", action="store_true", help="also training matrices of all genomes (train_all_*)")
    pp.add_argument("--schemes", nargs="+", choices=list(PIECES), default=list(PIECES),
                    help="piece schemes of the training matrices (default: all)")
    sub.add_parser("recipes", help="list the recipes")
    pt = sub.add_parser("train", help="train one recipe (nice it; log to WORK/runs/NAME.log)")
    pt.add_argument("recipe")
    pt.add_argument("--epochs", type=int, default=40)
    pt.add_argument("--input", help="training matrix (default: WORK/train_<pieces>.npy)")
    pt.add_argument("--out", help="run folder (default: WORK/runs/RECIPE)")
    pt.add_argument("--seed", type=int, default=SEED, help="train_vae --seed (split, shuffling, weights)")
    # More train_vae flags go after "--" (split off below: argparse's sub-parsers do not take "--" themselves).
    pe = sub.add_parser("eval", help="score models (recipe names or encoder paths) beside the baselines")
    pe.add_argument("models", nargs="*")
    pe.add_argument("--name", default="results", help="WORK/NAME.json and WORK/NAME.md")
    pe.add_argument("--no-baselines", action="store_true")
    pe.add_argument("--pca-train", help="training matrix the PCA baselines are fitted on (default WORK/train_1-50k.npy)")
    pe.add_argument("--engine", default="numpy", choices=("numpy", "keras", "auto"))
    pq = sub.add_parser("quick", help="tiny synthetic end-to-end run")
    pq.add_argument("models", nargs="*")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    a = p.parse_args(argv[:len(argv) - len(extra) - 1] if "--" in argv else argv)
    if extra and a.cmd != "train":
        p.error("flags after -- are train_vae flags for the train command only")
    try:
        if a.cmd == "prepare":
            prepare(PrepareOptions(work=a.work, n_train=a.n_train, n_query=a.n_query, n_pool=a.n_pool,
                                   all_genomes_train=a.all_genomes, pieces={s: PIECES[s] for s in a.schemes}))
        elif a.cmd == "recipes":
            for name, r in RECIPES.items():
                print(f"{name:<20} pieces {r.pieces:<6} {' '.join(r.flags)}\n{'':<20} {r.about}")
        elif a.cmd == "train":
            return train(a.recipe, a.work, a.epochs, seed=a.seed, extra=extra, input_matrix=a.input, out=a.out)
        elif a.cmd == "eval":
            evaluate(EvalOptions(work=a.work, models=a.models, name=a.name, engine=a.engine,
                                 baselines=not a.no_baselines, pca_train=a.pca_train))
        elif a.cmd == "quick":
            quick(a.work, models=a.models)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
