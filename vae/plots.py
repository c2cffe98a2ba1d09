"""Figures of the exploration commands: maps, clusters, density differences, overlays, cluster composition.

Every function takes arrays and an output path, writes a PNG (and a PDF beside
it on request) atomically, and returns the paths written. Figures are drawn
with matplotlib's object API on the Agg canvas — no pyplot, no global backend
switch — so importing this module never changes a notebook's backend.
"""
from __future__ import annotations

import colorsys
import os
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .errors import InputError
from .matrix import atomic_path, check_output_dir

#: Above this many points maps are drawn as hexbin densities rather than scatter plots.
HEXBIN_ABOVE = 200_000
DPI = 150
NOISE_COLOR = "#c8c8c8"


def _figure(width: float = 7.0, height: float = 6.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str, pdf: bool = False) -> list[str]:
    """Write ``fig`` to ``path`` as PNG (and to the same name with .pdf when ``pdf``), each atomically; returns the paths."""
    check_output_dir(path)
    targets = [(path, "png")]
    if pdf:
        targets.append((os.path.splitext(path)[0] + ".pdf", "pdf"))
    written = []
    for target, fmt in targets:
        with atomic_path(target, "." + fmt) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, facecolor="white")
        written.append(target)
    return written


def distinct_colors(n: int) -> list:
    """``n`` distinguishable colours: tab10 / tab20 when they suffice, else golden-ratio hues at alternating lightness."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        light, sat = (0.45, 0.85) if i % 3 == 0 else (0.6, 0.7) if i % 3 == 1 else (0.35, 0.6)
        out.append((*colorsys.hls_to_rgb(h, light, sat), 1.0))
    return out


def _drawn(n: int, max_draw: int, seed: int = 0) -> np.ndarray | None:
    """Sorted rows of a seeded subsample to draw when ``n`` exceeds ``max_draw`` (a 1200-pixel figure cannot show more)."""
    if max_draw <= 0 or n <= max_draw:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=max_draw, replace=False))


def _drawn_note(rows: np.ndarray | None) -> str:
    return "" if rows is None else f"\n({rows.size:,} points drawn at random)"


def _point_size(n: int) -> float:
    return float(np.clip(20000.0 / max(n, 1), 0.2, 12.0))


def _alpha(n: int) -> float:
    return float(np.clip(3000.0 / max(n, 1), 0.15, 0.9))


def _style_map_axes(ax, extent=None) -> None:
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    if extent is not None:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.set_aspect("equal", adjustable="datalim")


def _check_coords(coords: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        raise InputError(f"a map is (N, 2) coordinates, got shape {coords.shape}")
    return coords


def plot_map(
    coords: np.ndarray,
    path: str,
    *,
    values: np.ndarray | None = None,
    value_label: str = "log10 contig length",
    title: str | None = None,
    hexbin: bool | None = None,
    pdf: bool = False,
) -> list[str]:
    """A t-SNE map: small points (or a hexbin density above :data:`HEXBIN_ABOVE` points, which shows every point),
    optionally coloured by ``values``."""
    coords = _check_coords(coords)
    n = coords.shape[0]
    hexbin = n > HEXBIN_ABOVE if hexbin is None else hexbin
    fig = _figure()
    ax = fig.add_subplot()
    x, y = coords[:, 0], coords[:, 1]
    if hexbin:
        if values is None:
            hb = ax.hexbin(x, y, gridsize=250, bins="log", cmap="viridis", mincnt=1, linewidths=0)
            fig.colorbar(hb, ax=ax, shrink=0.8, label="contigs per hexagon (log scale)")
        else:
            hb = ax.hexbin(x, y, C=values, reduce_C_function=np.median, gridsize=250, cmap="viridis", mincnt=1, linewidths=0)
            fig.colorbar(hb, ax=ax, shrink=0.8, label=f"median {value_label} per hexagon")
    elif values is not None:
        order = np.argsort(values, kind="stable")  # the high values last, on top
        sc = ax.scatter(x[order], y[order], c=values[order], s=_point_size(n), cmap="viridis", linewidths=0, rasterized=True)
        fig.colorbar(sc, ax=ax, shrink=0.8, label=value_label)
    else:
        ax.scatter(x, y, s=_point_size(n), color="#1f77b4", alpha=_alpha(n), linewidths=0, rasterized=True)
    _style_map_axes(ax)
    ax.set_title(title or f"t-SNE map of {n:,} contigs")
    return save_figure(fig, path, pdf)


def plot_clusters(
    coords: np.ndarray,
    labels: np.ndarray,
    path: str,
    *,
    title: str | None = None,
    max_legend: int = 20,
    max_draw: int = 1_000_000,
    pdf: bool = False,
) -> list[str]:
    """The map coloured by cluster (noise light grey); a legend up to ``max_legend`` clusters, else numbers on the largest.

    Above ``max_draw`` points a seeded random subsample is drawn (the title says so); counts use all points.
    """
    coords = _check_coords(coords)
    labels = np.asarray(labels)
    if labels.shape[0] != coords.shape[0]:
        raise InputError(f"{labels.shape[0]:,} labels for {coords.shape[0]:,} points")
    n = coords.shape[0]
    clusters = np.unique(labels[labels >= 0])
    k = clusters.size
    noise_fraction = float((labels < 0).mean())
    sizes_all = {int(c): int(v) for c, v in zip(*np.unique(labels, return_counts=True))}
    sub = _drawn(n, max_draw)
    if sub is not None:
        coords, labels = coords[sub], labels[sub]
    noise = labels < 0
    fig = _figure(8.0 if k <= max_legend else 7.0, 6.0)
    ax = fig.add_subplot()
    s = _point_size(coords.shape[0])
    if noise.any():
        ax.scatter(coords[noise, 0], coords[noise, 1], s=s, color=NOISE_COLOR, linewidths=0, rasterized=True)
    colors = distinct_colors(max(k, 1))
    lookup = {int(c): i for i, c in enumerate(clusters.tolist())}
    if k:
        pts = ~noise
        ci = np.fromiter((lookup[int(c)] for c in labels[pts]), dtype=np.int64, count=int(pts.sum()))
        ax.scatter(coords[pts, 0], coords[pts, 1], s=s, c=ci, cmap=ListedColormap(colors), vmin=-0.5, vmax=max(k, 1) - 0.5,
                   linewidths=0, rasterized=True)
    if 0 < k <= max_legend:
        handles = [Line2D([], [], ls="", marker="o", ms=6, color=colors[lookup[c]], label=f"{c} ({sizes_all[c]:,})") for c in lookup]
        if -1 in sizes_all:
            handles.append(Line2D([], [], ls="", marker="o", ms=6, color=NOISE_COLOR, label=f"noise ({sizes_all[-1]:,})"))
        ax.legend(handles=handles, title="cluster (contigs)", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    elif k:
        # Too many for a legend: write the number of the largest clusters at their medians.
        sizes = np.array([sizes_all[int(c)] for c in clusters])
        for j in np.argsort(-sizes, kind="stable")[:30]:
            c = clusters[j]
            members = coords[labels == c]
            if not len(members):
                continue
            mx, my = np.median(members, axis=0)
            ax.text(mx, my, str(int(c)), fontsize=7, ha="center", va="center", weight="bold",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
    _style_map_axes(ax)
    ax.set_title((title or f"HDBSCAN: {k:,} clusters, {noise_fraction:.1%} noise (N = {n:,})") + _drawn_note(sub))
    return save_figure(fig, path, pdf)


def plot_density_difference(
    diffs: Sequence[tuple[str, str, np.ndarray]],
    extent: tuple[float, float, float, float],
    path: str,
    *,
    title: str | None = None,
    n_points: int | None = None,
    pdf: bool = False,
) -> list[str]:
    """Signed density differences (from :func:`vae.explore.density_differences`) on a diverging map centred at 0, one panel each."""
    if not diffs:
        raise InputError("no density differences to plot")
    m = len(diffs)
    cols = min(m, 3)
    rows = int(np.ceil(m / cols))
    # Panels follow the map's aspect ratio, so the colour bars are as tall as the maps.
    ratio = (extent[3] - extent[2]) / max(extent[1] - extent[0], 1e-12)
    panel_h = float(np.clip(4.4 * ratio, 2.2, 6.5)) + 1.0
    fig = _figure(5.8 * cols + 0.4, panel_h * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    # One robust symmetric range for every panel (comparable colours): a few extreme cells should not wash out the rest.
    v = max(float(np.percentile(np.abs(d), 99.5)) for _, _, d in diffs) or max(float(np.abs(d).max()) for _, _, d in diffs) or 1e-12
    for ax, (first, second, d) in zip(axes.flat, diffs):
        im = ax.imshow(d.T, origin="lower", extent=extent, cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.85, label=f"density {first} − density {second} (fraction per bin)")
        ax.set_title(f"{first} − {second}\nred: more {first}, blue: more {second}", fontsize=10)
        _style_map_axes(ax, extent)
    for ax in list(axes.flat)[m:]:
        ax.set_visible(False)
    n_txt = f", N = {n_points:,} contigs" if n_points else ""
    fig.suptitle(title or f"Density difference over the map{n_txt}")
    return save_figure(fig, path, pdf)


def plot_overlay(
    coords: np.ndarray,
    group_idx: np.ndarray,
    names: Sequence[str],
    path: str,
    *,
    title: str | None = None,
    seed: int = 0,
    max_draw: int = 1_000_000,
    pdf: bool = False,
) -> list[str]:
    """Each group in its own colour over the map (contigs in no group in light grey); drawn in a shuffled order with
    transparency so no group hides another where they overlap. Above ``max_draw`` points a random subsample is drawn."""
    coords = _check_coords(coords)
    group_idx = np.asarray(group_idx)
    n_all = int((group_idx >= 0).sum())
    counts = np.bincount(group_idx[group_idx >= 0], minlength=len(names))
    n_other = int((group_idx < 0).sum())
    sub = _drawn(coords.shape[0], max_draw, seed)
    if sub is not None:
        coords, group_idx = coords[sub], group_idx[sub]
    grouped = np.flatnonzero(group_idx >= 0)
    order = grouped[np.random.default_rng(seed).permutation(grouped.size)]
    colors = distinct_colors(len(names))
    fig = _figure(8.0, 6.0)
    ax = fig.add_subplot()
    s = _point_size(grouped.size)
    other = group_idx < 0
    if other.any():
        ax.scatter(coords[other, 0], coords[other, 1], s=s, color=NOISE_COLOR, alpha=0.5, linewidths=0, rasterized=True)
    a = _alpha(grouped.size)
    ax.scatter(coords[order, 0], coords[order, 1], s=s, c=group_idx[order], cmap=ListedColormap(colors),
               vmin=-0.5, vmax=len(names) - 0.5, alpha=a, linewidths=0, rasterized=True)
    handles = [Line2D([], [], ls="", marker="o", ms=7, color=colors[i], label=f"{nm} ({counts[i]:,})") for i, nm in enumerate(names)]
    if n_other:
        handles.append(Line2D([], [], ls="", marker="o", ms=7, color=NOISE_COLOR, label=f"in no group ({n_other:,})"))
    ax.legend(handles=handles, title="group (contigs)", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    _style_map_axes(ax)
    ax.set_title((title or f"{len(names)} groups over the map (N = {n_all:,})") + _drawn_note(sub))
    return save_figure(fig, path, pdf)


def plot_composition(
    composition,
    path: str,
    *,
    balanced: bool = False,
    max_clusters: int = 60,
    title: str | None = None,
    pdf: bool = False,
) -> list[str]:
    """Stacked bars: the share of each group in each cluster (from :func:`vae.explore.composition_table`).

    With ``balanced`` the groups are weighted equally (counts divided by group
    size). At most ``max_clusters`` bars, the largest clusters; noise last.
    """
    comp = composition
    frac = comp.balanced if balanced else comp.fractions
    sizes = comp.counts.sum(axis=1)
    rows = np.arange(comp.clusters.size)
    real = rows[comp.clusters >= 0]
    shown = real[np.argsort(-sizes[real], kind="stable")][:max_clusters]
    shown = np.sort(shown)
    noise_rows = rows[comp.clusters < 0]
    shown = np.concatenate([shown, noise_rows])
    colors = distinct_colors(len(comp.names))
    fig = _figure(max(6.0, min(16.0, 2.0 + 0.22 * shown.size)), 5.0)
    ax = fig.add_subplot()
    x = np.arange(shown.size)
    bottom = np.zeros(shown.size)
    for g, name in enumerate(comp.names):
        ax.bar(x, frac[shown, g], bottom=bottom, color=colors[g], width=0.85, label=name, edgecolor="none")
        bottom += frac[shown, g]
    ax.set_xticks(x, ["noise" if comp.clusters[r] < 0 else str(int(comp.clusters[r])) for r in shown],
                  rotation=90 if shown.size > 20 else 0, fontsize=7 if shown.size > 20 else 9)
    ax.set_xlim(-0.6, shown.size - 0.4)
    ax.set_ylim(0, 1)
    ax.set_xlabel("cluster")
    ax.set_ylabel("share of the cluster's contigs" + (" (groups weighted equally)" if balanced else ""))
    ax.legend(title="group", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    more = f", largest {max_clusters} of {real.size}" if real.size > max_clusters else ""
    ax.set_title(title or f"Cluster composition ({real.size} clusters{more}, N = {int(sizes.sum()):,})")
    return save_figure(fig, path, pdf)
