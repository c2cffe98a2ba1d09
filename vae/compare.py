"""The ``compare_groups`` command: :class:`CompareOptions` + :func:`run`.

The group comparison itself (assigning IDs to groups, densities, composition)
is in :mod:`vae.explore`; the figures in :mod:`vae.plots`.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from .errors import InputError
from .options import option, quiet_option


@dataclass
class CompareOptions:
    """Everything ``compare_groups`` takes."""

    coords: str = option(flags=("-c", "--coords"), required=True, metavar="MAP.npy", help="t-SNE coordinates (N, 2)")
    ids: str = option(flags=("-id", "--ids"), required=True, metavar="IDS.txt", help="IDs of the map's rows")
    groups_tsv: str | None = option(None, metavar="TSV", help="ID<TAB>group lines")
    prefix: list[str] = option(default_factory=list, action="append", metavar="NAME=PREFIX",
                               help="a group of the IDs starting with PREFIX (repeat)")
    regex: list[str] = option(default_factory=list, action="append", metavar="NAME=REGEX",
                              help="a group of the IDs matching REGEX (repeat)")
    clusters: str | None = option(None, metavar="CLUSTERS.tsv",
                                  help="ID<TAB>cluster from `cluster`: adds the composition table and chart")
    output: str = option(flags=("-o", "--output"), required=True, metavar="PREFIX",
                         help="output prefix (or an existing folder: FOLDER/compare.*)")
    bins: int = option(0, help="histogram bins per axis (0 = about 10 points per bin, 40 to 300)")
    smooth: float = option(1.0, help="Gaussian smoothing of the histograms, in bins (0 = none)")
    balanced: bool = option(False, help="composition chart with groups weighted equally (the CSV has both)")
    pdf: bool = option(False, help="also write each figure as PDF")
    quiet: bool = quiet_option()

    def __post_init__(self) -> None:
        if self.bins < 0:
            raise InputError(f"--bins must be >= 0, got {self.bins}")
        if self.groups_tsv and (self.prefix or self.regex):
            raise InputError("give groups either with --groups-tsv or with --prefix/--regex, not both")

    @property
    def prefix_path(self) -> str:
        """Where the outputs go: ``-o`` itself, or ``FOLDER/compare`` for an existing folder."""
        return os.path.join(self.output, "compare") if os.path.isdir(self.output) else self.output


def run(opts: CompareOptions) -> list[str]:
    """Densities, overlay and (with --clusters) composition of the groups over one map; returns the files written."""
    from .explore import (assign_groups, composition_table, density_differences, group_counts, group_densities,
                          parse_named, read_cluster_tsv, read_group_table)
    from .matrix import check_output_dir, load_coords
    from .paths import check_paths
    from .plots import plot_composition, plot_density_difference, plot_overlay

    def log(msg: str) -> None:
        if not opts.quiet:
            print(f"compare_groups: {msg}", file=sys.stderr)

    prefix = opts.prefix_path
    check_paths([opts.coords, opts.ids, opts.groups_tsv, opts.clusters],
                [prefix + e for e in (".density.png", ".overlay.png") + ((".density.pdf", ".overlay.pdf") if opts.pdf else ())
                 + (((".composition.png", ".composition.csv") + ((".composition.pdf",) if opts.pdf else ())) if opts.clusters else ())])
    check_output_dir(prefix + ".density.png")
    coords, ids = load_coords(opts.coords, opts.ids)
    if opts.groups_tsv:
        group_idx, names = assign_groups(ids, table=read_group_table(opts.groups_tsv))
    else:
        group_idx, names = assign_groups(ids, prefixes=parse_named(opts.prefix, "prefix"), regexes=parse_named(opts.regex, "regex"))
    if len(names) < 2:
        raise InputError(f"comparing needs at least two groups, got {len(names)} ({', '.join(names)})")
    counts = group_counts(group_idx, names)
    n_grouped = int(sum(counts.values()))
    log(f"{len(names)} groups over {len(ids):,} points: " + ", ".join(f"{g} {c:,}" for g, c in counts.items())
        + (f"; {len(ids) - n_grouped:,} in no group (left out)" if n_grouped < len(ids) else ""))
    labels = read_cluster_tsv(opts.clusters, ids) if opts.clusters else None
    dens, extent = group_densities(coords, group_idx, len(names), bins=opts.bins or None, smooth=opts.smooth)
    written = plot_density_difference(density_differences(dens, names), extent, prefix + ".density.png",
                                      n_points=n_grouped, pdf=opts.pdf)
    written += plot_overlay(coords, group_idx, names, prefix + ".overlay.png", pdf=opts.pdf)
    if labels is not None:
        unknown = int(((labels == -2) & (group_idx >= 0)).sum())
        if unknown:
            log(f"warning: {unknown:,} grouped IDs are not in {opts.clusters} and are left out of the composition")
        comp = composition_table(labels, group_idx, names)
        written += plot_composition(comp, prefix + ".composition.png", balanced=opts.balanced, pdf=opts.pdf)
        comp.write_csv(prefix + ".composition.csv")
        written.append(prefix + ".composition.csv")
    log(f"wrote {', '.join(written)}")
    return written
