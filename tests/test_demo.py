"""The README's first command, reduced: the whole pipeline end to end on simulated genomes."""
from __future__ import annotations

import re

import numpy as np
from matplotlib.image import imread

from vae import mock
from vae.cli import demo

from .conftest import call_cli


def test_quick_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    assert call_cli(demo, ["-o", out, "--quick", "--simulated"]) == 0
    page = (out / "index.html").read_text()
    # Every step ran and is listed with its command line.
    for step in ("calculate_kmer_frequencies", "concatenate_matrices", "train_vae", "embedding",
                 "verify_local_distances", "evaluate_labels", "tsne", "cluster", "compare_groups"):
        assert step in page, step
    assert "was not written" not in page
    # Every figure the page shows exists and is a real picture, not a blank canvas.
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 6
    for name in images:
        img = imread(out / name)
        assert img.shape[0] >= 300 and img.shape[1] >= 300, name
        assert np.std(img[..., :3]) > 0.05, f"{name} looks blank"
    # Rows, IDs, embeddings and the map stay aligned through the pipeline.
    ids = (out / "all.txt").read_text().splitlines()
    assert len(ids) == 2 * 150 and len(set(ids)) == len(ids)
    assert np.load(out / "emb.npy").shape[0] == len(ids) == np.load(out / "map.npy").shape[0]
    assert "PCA" in page and "CLR" in page
    # Leiden beside HDBSCAN, each scored against the mock's genomes; bins of the Leiden clusters.
    assert re.search(r"HDBSCAN on the map: \d+ clusters, ARI [-0-9.]+ against the genomes", page)
    assert re.search(r"Leiden on the latent vectors \(resolution 1\): \d+ clusters, ARI [-0-9.]+ against the genomes", page)
    binned = [line.split("\t")[0] for line in (out / "bins" / "contig_bins.tsv").read_text().splitlines()]
    assert len(set(binned)) == len(binned) and set(binned) <= set(ids)


def test_mock_metagenome_labels_cover_every_contig(tmp_path):
    mg = mock.build(str(tmp_path), n_genomes=3, contigs_per_sample=20, use_real=False)
    labels = (tmp_path / "labels.tsv").read_text().splitlines()
    assert labels[0].split("\t")[:3] == ["id", "sample", "genome"]
    assert len(labels) - 1 == mg.n_contigs == 40
    assert {line.split("\t")[1] for line in labels[1:]} == {"water", "sediment"}
