"""The ``tsne`` command: :class:`TsneOptions` + :func:`run` (the map itself is :func:`vae.explore.run_tsne`)."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .options import option, quiet_option


@dataclass
class TsneOptions:
    """Everything ``tsne`` takes; defaults are those of :func:`vae.explore.tsne_settings`."""

    embeddings: str = option(flags=("-e", "--embeddings"), required=True, metavar="EMB.npy",
                             help="embeddings (N, 1 + latent): column 0 length, then z_mean")
    ids: str | None = option(None, flags=("-id", "--ids"), metavar="IDS.txt",
                             help="IDs of the rows (.txt or .txt.gz); checked against the row count")
    output: str = option(flags=("-o", "--output"), required=True, metavar="MAP.npy", help="output coordinates (N, 2), float32")
    length_column: bool = option(True, flags=("--no-length-column",), action="store_false",
                                 help="the input is a plain (N, latent) matrix with no length column")
    perplexity: float = option(30.0, help="perplexity of the Gaussian affinities (uses 3x as many neighbours)")
    affinity: str = option("perplexity", choices=("perplexity", "uniform"),
                           help="perplexity-based affinities, or uniform weights over --k-neighbors neighbours (less memory)")
    k_neighbors: int = option(15, help="neighbours per point with --affinity uniform")
    neighbors: str = option("auto", choices=("auto", "annoy", "hnsw", "exact"),
                            help="nearest-neighbour search (auto: exact below 1000 points, else Annoy)")
    exaggeration: float | None = option(None, help="exaggeration of the main phase (default: 1 up to 100k points, rising to 4 at 1M)")
    early_exaggeration: float = option(12.0, help="exaggeration of the early phase")
    early_iter: int = option(250, help="iterations of the early-exaggeration phase")
    n_iter: int = option(500, help="iterations of the main phase")
    init: str = option("pca", choices=("pca", "spectral", "random"), help="initial layout")
    pca_dims: int = option(0, help="first project onto this many principal components (0 = no)")
    max_points: int = option(0, help="map a seeded random subsample of this many rows (0 = all); writes their IDs to MAP.txt (needs -id)")
    color_by: str = option("length", choices=("length", "none"), help="colour of the map's points")
    png: str | None = option(None, metavar="PNG", help="the map's figure (default: beside the output, .png)")
    no_plot: bool = option(False, help="write no figure")
    pdf: bool = option(False, help="also write each figure as PDF (same name, .pdf)")
    threads: int = option(0, help="threads (0 = all cores)")
    seed: int = option(42, help="seed of the neighbour search, initialisation and subsample")
    quiet: bool = quiet_option()

    def __post_init__(self) -> None:
        for name in ("k_neighbors", "early_iter", "n_iter", "pca_dims", "max_points", "threads"):
            v = getattr(self, name)
            if v < 0:
                raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {v}")

    @property
    def stem(self) -> str:
        return self.output[:-4] if self.output.endswith(".npy") else self.output


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB."""
    import resource

    # ru_maxrss is in KiB on Linux (bytes on macOS).
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1 << 30) if sys.platform == "darwin" else r / (1 << 20)


def run(opts: TsneOptions) -> dict:
    """Map the embeddings; write the coordinates, (sampled IDs,) the figure and a JSON of settings and timings; returns it."""
    from .explore import run_tsne, subsample, tsne_settings
    from .matrix import NpyStreamWriter, atomic_text, check_output_dir, load_embeddings
    from .paths import check_paths

    stem = opts.stem
    png = None if opts.no_plot else (opts.png or stem + ".png")
    ids_out = stem + ".txt" if opts.max_points else None
    check_paths([opts.embeddings, opts.ids], [opts.output, png, png and opts.pdf and os.path.splitext(png)[0] + ".pdf",
                                              ids_out, stem + ".json"])
    for path in filter(None, [opts.output, png, ids_out]):
        check_output_dir(path)
    if opts.max_points and not opts.ids:
        raise InputError("--max-points needs -id/--ids: the sampled rows' IDs are written beside the map")
    emb = load_embeddings(opts.embeddings, opts.ids, length_column=opts.length_column)
    rows = subsample(len(emb), opts.max_points, opts.seed)
    z, lengths, ids = emb.z, emb.lengths, emb.ids
    if rows is not None:
        z, lengths = z[rows], (lengths[rows] if lengths is not None else None)
        ids = [ids[i] for i in rows.tolist()]
        if not opts.quiet:
            print(f"tsne: mapping a random subsample of {rows.size:,} of {len(emb):,} rows (seed {opts.seed})", file=sys.stderr)
    settings = dict(perplexity=opts.perplexity, affinity=opts.affinity, k_neighbors=opts.k_neighbors, neighbors=opts.neighbors,
                    exaggeration=opts.exaggeration, early_exaggeration=opts.early_exaggeration,
                    early_exaggeration_iter=opts.early_iter, n_iter=opts.n_iter, initialization=opts.init,
                    pca_dims=opts.pca_dims, threads=opts.threads, seed=opts.seed)
    resolved = tsne_settings(z.shape[0], **settings)
    if opts.affinity == "perplexity" and resolved["perplexity"] < opts.perplexity and not opts.quiet:
        print(f"tsne: warning: perplexity {opts.perplexity:g} needs more than {z.shape[0]:,} points; "
              f"using {resolved['perplexity']:.3g} (the most {z.shape[0]:,} points allow)", file=sys.stderr)
    t0 = time.perf_counter()
    coords = run_tsne(z, quiet=opts.quiet, **settings)
    seconds = time.perf_counter() - t0
    del z
    written = []
    with NpyStreamWriter(opts.output, 2, np.float32) as w:
        w.write(coords)
        if ids_out:
            with atomic_text(ids_out) as fh:
                fh.writelines(i + "\n" for i in ids)
            written.append(ids_out)
        if png:
            from .plots import plot_map

            color = np.log10(np.maximum(lengths, 1.0)) if (lengths is not None and opts.color_by == "length") else None
            written += plot_map(coords, png, values=color, pdf=opts.pdf)
        w.commit()
    info = {"input": os.path.abspath(opts.embeddings), "n_input_rows": len(emb), "latent_dims": emb.z.shape[1],
            "subsampled_rows": None if rows is None else int(rows.size), "settings": resolved, "seconds": round(seconds, 1),
            "peak_rss_gb": round(peak_rss_gb(), 2)}
    json_path = stem + ".json"
    check_output_dir(json_path)
    with atomic_text(json_path) as fh:
        fh.write(json.dumps(info, indent=1, allow_nan=False) + "\n")
    if not opts.quiet:
        print(f"tsne: {coords.shape[0]:,} points in {seconds:.1f} s (peak memory {info['peak_rss_gb']:.1f} GB) -> "
              f"{', '.join([opts.output] + written + [json_path])}", file=sys.stderr)
    return info
