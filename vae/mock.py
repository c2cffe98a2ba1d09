"""Mock metagenomes: two samples of contigs drawn from known genomes with different abundances.

Built from the real genomes in ``../shared/data/genomes`` when they are there,
from :mod:`vae.simulate` genomes otherwise. Contig IDs carry the sample as a
prefix (``water_000001``) and a labels TSV gives each contig's genome and
taxonomy, so every later step can be checked against the truth.
"""
from __future__ import annotations

import csv
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .simulate import fragments, random_genome, write_fasta

#: Where the real genomes live relative to a checkout (``../shared/data``).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLES = ("water", "sediment")
RANKS = ("genome", "genus", "family", "order", "class", "phylum")


@dataclass
class MockMetagenome:
    """Paths of the FASTA files (one per sample), the labels TSV, and where the genomes came from."""

    fastas: dict[str, str]
    labels: str
    source: str
    n_genomes: int
    n_contigs: int


def _read_genome(path: Path) -> str:
    with gzip.open(path, "rt") as fh:
        return "".join(line.strip() for line in fh if not line.startswith(">"))


def _real_genomes(n: int, seed: int) -> list[tuple[dict, str]]:
    table = SHARED_DATA / "genomes.tsv"
    with open(table) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    rng = np.random.default_rng(seed)
    # One genome per phylum first, so the mock spans the tree; then fill up.
    by_phylum: dict[str, list[dict]] = {}
    for r in rows:
        by_phylum.setdefault(r["phylum"], []).append(r)
    picked = [g[int(rng.integers(len(g)))] for g in by_phylum.values()]
    rest = [r for r in rows if r not in picked]
    rng.shuffle(rest)
    picked = (picked + rest)[:n]
    out = []
    for r in picked:
        meta = {"genome": r["file"].split(".")[0], **{rank: r[rank] for rank in RANKS[1:]}}
        out.append((meta, _read_genome(SHARED_DATA / "genomes" / r["file"])))
    return out


def _simulated_genomes(n: int, seed: int, length: int = 400_000) -> list[tuple[dict, str]]:
    out = []
    for g in range(n):
        # Pairs of genomes share a "genus" (close GC), so ranks above genome are meaningful.
        gc = 0.32 + 0.36 * (g // 2) / max(1, (n - 1) // 2)
        meta = {"genome": f"sim{g:02d}", "genus": f"simgenus{g // 2}", "family": f"simfamily{g // 4}",
                "order": f"simorder{g // 4}", "class": f"simclass{g // 4}", "phylum": f"simphylum{g // 4}"}
        out.append((meta, random_genome(length, seed=seed * 1000 + g, gc=gc + 0.02 * (g % 2))))
    return out


def build(out_dir: str, n_genomes: int = 8, contigs_per_sample: int = 600, min_len: int = 2000,
          max_len: int = 12000, seed: int = 42, use_real: bool | None = None) -> MockMetagenome:
    """Write ``water.fa.gz``, ``sediment.fa.gz`` and ``labels.tsv`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    if use_real is None:
        use_real = (SHARED_DATA / "genomes.tsv").is_file()
    genomes = _real_genomes(n_genomes, seed) if use_real else _simulated_genomes(n_genomes, seed)
    rng = np.random.default_rng(seed)
    # Different abundance profiles per sample: some genomes dominate one sample, are rare in the other.
    abundances = {s: rng.dirichlet(np.full(len(genomes), 0.7)) for s in SAMPLES}
    fastas, labels = {}, []
    for s_i, sample in enumerate(SAMPLES):
        counts = rng.multinomial(contigs_per_sample, abundances[sample])
        records = []
        for g_i, ((meta, seq), n) in enumerate(zip(genomes, counts)):
            for frag in fragments(seq, int(n), min_len, max_len, seed=seed + 100 * s_i + g_i):
                cid = f"{sample}_{len(records) + 1:06d}"
                records.append((cid, frag))
                labels.append({"id": cid, "sample": sample, **meta})
        order = rng.permutation(len(records))
        path = os.path.join(out_dir, f"{sample}.fa.gz")
        write_fasta(path, [records[i] for i in order])
        fastas[sample] = path
    label_path = os.path.join(out_dir, "labels.tsv")
    with open(label_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "sample", *RANKS], delimiter="\t")
        w.writeheader()
        w.writerows(labels)
    return MockMetagenome(fastas, label_path, "real genomes (../shared/data)" if use_real else "simulated genomes",
                          len(genomes), len(labels))
