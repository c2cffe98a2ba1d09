"""The Snakemake workflow (workflow/Snakefile) end to end on small mock samples, and its idempotence.

One test runs the whole workflow with ``--cores 2`` (tiny training: 2 epochs,
latent 4) through the checkout's ./bin commands, checks every output against
the inputs, and checks that a second run has nothing to do.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae.simulate import fragments, random_genome, write_fasta

from .conftest import REPO

pytest.importorskip("snakemake", reason="the workflow test needs Snakemake (pip install -e .[workflow])")
pytest.importorskip("keras", reason="the workflow trains a model: needs TensorFlow/Keras")

SNAKEFILE = REPO / "workflow" / "Snakefile"


def mock_samples(d: Path) -> dict[str, tuple[Path, list[str]]]:
    """Three samples (one gzipped) of contigs from four simulated genomes; a few contigs are below min_length."""
    genomes = [random_genome(60_000, seed=g) for g in range(4)]
    out = {}
    for s, name in enumerate(("lake", "soil", "gut")):
        records = []
        for g, genome in enumerate(genomes):
            for j, frag in enumerate(fragments(genome, 12, 1500, 6000, seed=100 * s + g)):
                records.append((f"contig_{g}_{j}", frag))  # the same names in every sample, as assemblers do
        records.append(("short_one", genomes[0][:500]))
        path = d / (f"{name}.fa.gz" if name == "soil" else f"{name}.fasta")
        write_fasta(str(path), records)
        out[name] = (path, [i for i, seq in records if len(seq) >= 1000])
    return out


def snakemake(workdir: Path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--configfile", str(config),
                           "--directory", str(workdir), "--cores", "2", *extra],
                          capture_output=True, text=True, timeout=600)


def test_workflow_end_to_end_then_nothing_to_do(tmp_path):
    samples = mock_samples(tmp_path)
    out = tmp_path / "results"
    config = tmp_path / "config.yaml"
    lines = ["samples:"] + [f"  {n}: {p}" for n, (p, _) in samples.items()] + [
        f"outdir: {out}",
        "min_length: 1000",
        f"bin: {REPO / 'bin'}/",
        "train: {epochs: 2, latent: 4, hidden: [32, 16], batch_size: 32, warmup_epochs: 1}",
        "threads: {count: 1, embed: 1, train: 2}",
        'cluster: {method: leiden, tsne_args: "--no-plot --n-iter 100 --early-iter 50", args: "-k 10"}',
    ]
    config.write_text("\n".join(lines) + "\n")
    first = snakemake(tmp_path, config)
    assert first.returncode == 0, first.stderr[-4000:]

    total = 0
    for name, (_, ids) in samples.items():
        kmers = np.load(out / "kmers" / f"{name}.npy")
        emb = np.load(out / "embeddings" / f"{name}.npy")
        assert (out / "embeddings" / f"{name}.txt").read_text().splitlines() == ids
        assert emb.shape == (len(ids), 1 + 4) and np.isfinite(emb).all()
        np.testing.assert_array_equal(emb[:, 0], kmers[:, 0])  # column 0: the contig length, row for row
        total += len(ids)
    train_ids = (out / "train" / "train.txt").read_text().splitlines()
    assert len(train_ids) == total and train_ids != sum((ids for _, ids in samples.values()), [])  # shuffled
    all_ids = (out / "all" / "embeddings.txt").read_text().splitlines()
    assert all_ids == [f"{n}/{i}" for n, (_, ids) in samples.items() for i in ids] and len(set(all_ids)) == total
    assert (out / "model" / "encoder.keras").exists() and (out / "model" / "encoder.json").exists()
    assert (out / "index" / "meta.json").exists()
    clusters = (out / "clusters" / "clusters.tsv").read_text().splitlines()
    assert len([c for c in clusters if not c.startswith("#")]) in (total, total + 1)  # with or without a header
    report = (out / "report.md").read_text()
    assert all(f"| {n} |" in report for n in samples) and f"| all | | {total:,} |" in report

    # A second run finds everything up to date.
    second = snakemake(tmp_path, config)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "Nothing to be done" in second.stdout + second.stderr

    # With an existing model: no counting, shuffling or training is planned (dry run), only per-sample embedding.
    given = tmp_path / "given.yaml"
    given.write_text(config.read_text().replace(f"outdir: {out}", f"outdir: {tmp_path / 'with_model'}")
                     + f"model: {out / 'model' / 'encoder.json'}\n")
    plan = snakemake(tmp_path, given, "-n")
    assert plan.returncode == 0, plan.stderr[-4000:]
    text = plan.stdout + plan.stderr
    assert "rule embed:" in text or "embed" in text
    for rule in ("count", "shuffle", "train", "export"):
        assert f"rule {rule}:" not in text, rule
