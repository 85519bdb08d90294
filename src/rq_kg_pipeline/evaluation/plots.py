"""Figures of training and code quality: per-level losses, code usage, reconstruction, a 2-D projection.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state), so they render
headless, never leak through pyplot's figure registry, and can be saved by Kedro's
MatplotlibWriter or shown in a notebook.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from rq_kg_pipeline.evaluation.code_stats import check_codes, level_usage

_LEVEL_COLUMN = re.compile(r"^quant_loss_l(\d+)$")
_MAX_DISCRETE_COLOURS = 12  # integer colour values with at most this many levels get a discrete colour bar
_LOG_SCALE_SPAN = 20.0  # use a log y-axis when positive values span more than this factor


def _new_figure(width: float, height: float) -> Figure:
    """A Figure with an Agg canvas attached (savefig and tight layout work without pyplot)."""
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _wants_log(values: np.ndarray) -> bool:
    """True when all finite values are positive and span more than ``_LOG_SCALE_SPAN``."""
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool((finite > 0).all()) and finite.max() / finite.min() > _LOG_SCALE_SPAN


def plot_level_losses(history: pd.DataFrame) -> Figure:
    """Loss curves per epoch: total and structural loss (left), each quantizer level's loss (right).

    ``history`` has columns ``epoch``, ``quant_loss_l1`` .. ``quant_loss_l{Q}``, and optionally
    ``loss`` and ``structure_loss``; other columns are ignored.
    """
    if "epoch" not in history.columns:
        raise ValueError(f"history must have an 'epoch' column, got {list(history.columns)}")
    levels = sorted(
        (int(match.group(1)), column)
        for column in history.columns
        if (match := _LEVEL_COLUMN.match(str(column)))
    )
    if not levels:
        raise ValueError(f"history must have quant_loss_l1..quant_loss_lQ columns, got {list(history.columns)}")
    epochs = history["epoch"].to_numpy()
    figure = _new_figure(11, 4.2)
    total_ax, level_ax = figure.subplots(1, 2)

    totals = [column for column in ("loss", "structure_loss") if column in history.columns]
    labels = {"loss": "total loss", "structure_loss": "structure (link-prediction) loss"}
    for column in totals:
        total_ax.plot(epochs, history[column].to_numpy(dtype=float), label=labels[column], linewidth=1.6)
    if totals:
        if _wants_log(history[totals].to_numpy(dtype=float).ravel()):
            total_ax.set_yscale("log")
        total_ax.legend()
    else:
        total_ax.text(0.5, 0.5, "no total/structure loss recorded", ha="center", va="center",
                      transform=total_ax.transAxes)
    total_ax.set_title("Training loss")
    total_ax.set_xlabel("epoch")
    total_ax.set_ylabel("loss")
    total_ax.grid(alpha=0.3)

    for level, column in levels:
        level_ax.plot(epochs, history[column].to_numpy(dtype=float), label=f"level {level}", linewidth=1.6)
    if _wants_log(history[[column for _, column in levels]].to_numpy(dtype=float).ravel()):
        level_ax.set_yscale("log")
    level_ax.set_title("Quantizer loss per residual level")
    level_ax.set_xlabel("epoch")
    level_ax.set_ylabel("codebook + commitment loss")
    level_ax.legend()
    level_ax.grid(alpha=0.3)
    return figure


def plot_code_usage(codes: torch.Tensor, num_codes: int) -> Figure:
    """One panel per level: how often each code is used, codes sorted from most to least used (log scale).

    A flat curve on the dashed uniform line is ideal; a steep head and a long unused (grey) tail
    is codebook collapse. Each title gives the used share and the perplexity of that level.
    """
    codes = check_codes(codes, num_codes)
    num_quantizers = codes.shape[2]
    columns = min(num_quantizers, 4)
    rows = math.ceil(num_quantizers / columns)
    figure = _new_figure(3.6 * columns + 0.6, 3.2 * rows + 0.5)
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
    ranks = np.arange(1, num_codes + 1)
    uniform = codes.shape[0] * codes.shape[1] / num_codes
    for level in range(num_quantizers):
        ax = axes[level]
        counts = torch.bincount(codes[:, :, level].reshape(-1).long().cpu(), minlength=num_codes)
        sorted_counts = torch.sort(counts, descending=True).values.double().numpy()  # [K]
        used = int((counts > 0).sum())
        perplexity = level_usage(codes[:, :, level], num_codes)["perplexity"]
        shown = np.where(sorted_counts > 0, sorted_counts, np.nan)  # unused codes have no point on a log axis
        colour = f"C{level % 10}"
        ax.fill_between(ranks, shown, 0.5, step="mid", alpha=0.3, color=colour)
        ax.step(ranks, shown, where="mid", color=colour, linewidth=1.4)
        ax.axhline(uniform, color="black", linestyle="--", linewidth=1.0)
        if used < num_codes:
            ax.axvspan(used + 0.5, num_codes + 0.5, color="0.85", zorder=0)
        ax.set_yscale("log")
        ax.set_title(f"Level {level + 1}: {used}/{num_codes} codes used\nperplexity {perplexity:.1f}", fontsize=10)
        ax.set_xlabel("code rank (most used first)")
        ax.set_xlim(0.5, num_codes + 0.5)
        ax.grid(alpha=0.3)
        if level % columns == 0:
            ax.set_ylabel("assignments (entities x positions)")
    for ax in axes[num_quantizers:]:
        figure.delaxes(ax)
    handles = [
        Line2D([], [], color="C0", linewidth=1.4, label="assignments per code (level colour)"),
        Line2D([], [], color="black", linestyle="--", linewidth=1.0, label="uniform usage"),
        Patch(color="0.85", label="unused codes"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9)
    figure.suptitle("Code usage per residual level")
    return figure


def plot_reconstruction_by_level(mse_by_level: Sequence[float]) -> Figure:
    """Quantizer reconstruction MSE after the first q levels, q = 1..Q (it should fall with q)."""
    values = np.asarray(list(mse_by_level), dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"mse_by_level must be a non-empty list of floats, got {mse_by_level!r}")
    levels = np.arange(1, values.size + 1)
    figure = _new_figure(6, 4)
    ax = figure.subplots()
    ax.plot(levels, values, marker="o", linewidth=1.8, label="MSE of z vs. sum of levels 1..q")
    for level, value in zip(levels, values):
        ax.annotate(f"{value:.3g}", (level, value), textcoords="offset points", xytext=(0, 7), ha="center",
                    fontsize=9)
    if bool((values > 0).all()) and values.max() / values.min() > _LOG_SCALE_SPAN:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0, top=values.max() * 1.15 if values.max() > 0 else 1.0)
    ax.set_xticks(levels)
    ax.set_xlim(0.6, values.size + 0.4)
    ax.set_title("Reconstruction error by number of residual levels")
    ax.set_xlabel("levels used (q)")
    ax.set_ylabel("mean squared error")
    ax.legend()
    ax.grid(alpha=0.3)
    return figure


def pca_2d(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic 2-D PCA of ``vectors`` [M, D]: coordinates [M, 2] and explained-variance shares [2].

    Exact SVD of the centred data (not the randomised ``pca_lowrank``); each component's sign is
    fixed so that its largest-magnitude loading is positive.
    """
    if vectors.dim() != 2 or vectors.shape[0] < 2 or vectors.shape[1] < 2:
        raise ValueError(f"PCA needs at least 2 vectors of dimension >= 2, got shape {tuple(vectors.shape)}")
    data = vectors.detach().double().cpu()
    centred = data - data.mean(dim=0, keepdim=True)  # [M, D]
    _, singular, right = torch.linalg.svd(centred, full_matrices=False)  # [r], [r, D]
    components = right[:2]  # [2, D]
    pivot = components.abs().argmax(dim=1)  # [2]
    signs = torch.sign(components[torch.arange(2), pivot])
    components = components * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
    variance = singular.pow(2)
    share = variance[:2] / variance.sum() if float(variance.sum()) > 0 else torch.zeros(2, dtype=torch.float64)
    return centred @ components.T, share


def plot_code_projection(
    code_embeddings: torch.Tensor, colour_values: torch.Tensor | np.ndarray | Sequence[float], colour_label: str
) -> Figure:
    """Scatter of entities on the first two principal components of their (mean over L) code embeddings.

    ``code_embeddings`` is [M, L, D] or [M, D]; points are coloured by ``colour_values`` [M]
    (e.g. log degree or a degree bucket) with a colour bar named ``colour_label``.
    """
    if code_embeddings.dim() == 3:
        vectors = code_embeddings.detach().float().mean(dim=1)  # [M, D]
    elif code_embeddings.dim() == 2:
        vectors = code_embeddings.detach().float()
    else:
        raise ValueError(f"code_embeddings must have shape [M, L, D] or [M, D], got {tuple(code_embeddings.shape)}")
    colours = np.asarray(
        colour_values.detach().cpu().numpy() if isinstance(colour_values, torch.Tensor) else colour_values,
        dtype=float,
    )
    if colours.shape != (vectors.shape[0],):
        raise ValueError(f"colour_values must have shape [M] = [{vectors.shape[0]}], got {colours.shape}")
    coords, share = pca_2d(vectors)
    coords_np = coords.numpy()
    figure = _new_figure(7, 5.6)
    ax = figure.subplots()
    size = float(np.clip(3000.0 / max(len(colours), 1), 3.0, 30.0))
    order = np.argsort(colours, kind="stable")  # draw high values last so they stay visible
    levels = np.unique(colours[np.isfinite(colours)])
    discrete = 0 < levels.size <= _MAX_DISCRETE_COLOURS and bool(np.all(levels == np.round(levels)))
    if discrete:  # e.g. degree buckets: one colour per value, integer ticks
        bounds = np.concatenate([levels - 0.5, levels[-1:] + 0.5])
        cmap = colormaps["viridis"].resampled(levels.size)
        norm = BoundaryNorm(bounds, levels.size) if levels.size > 1 else None
    else:
        cmap, norm = colormaps["viridis"], None
    scatter = ax.scatter(coords_np[order, 0], coords_np[order, 1], c=colours[order], cmap=cmap, norm=norm, s=size,
                         alpha=0.75, linewidths=0)
    colourbar = figure.colorbar(scatter, ax=ax, label=colour_label)
    if discrete:
        colourbar.set_ticks(levels)
        colourbar.set_ticklabels([str(int(level)) for level in levels])
    ax.set_title(f"Entity code embeddings, PCA (n = {len(colours)})")
    ax.set_xlabel(f"PC1 ({100 * float(share[0]):.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * float(share[1]):.1f}% of variance)")
    ax.grid(alpha=0.3)
    return figure
