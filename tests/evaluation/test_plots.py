"""Plots return Figures with the expected panels and lines, and save to PNG headless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from rq_kg_pipeline.evaluation.plots import (
    pca_2d,
    plot_code_projection,
    plot_code_usage,
    plot_level_losses,
    plot_reconstruction_by_level,
)


def _history(epochs: int = 60, levels: int = 4) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    columns = {"epoch": epoch}
    for level in range(1, levels + 1):
        columns[f"quant_loss_l{level}"] = 2.0 / level * np.exp(-epoch / 15) + 0.01 * level
    columns["structure_loss"] = 0.7 * np.exp(-epoch / 20) + 0.05
    columns["loss"] = columns["structure_loss"] + sum(columns[f"quant_loss_l{q}"] for q in range(1, levels + 1))
    columns["valid_mrr"] = np.linspace(0.1, 0.3, epochs)  # ignored by the plot
    return pd.DataFrame(columns)


def _png_ok(figure: Figure, path: Path) -> None:
    figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000


def test_level_losses(tmp_path: Path) -> None:
    figure = plot_level_losses(_history())
    assert isinstance(figure, Figure)
    total_ax, level_ax = figure.axes
    assert len(total_ax.get_lines()) == 2
    assert [line.get_label() for line in level_ax.get_lines()] == [f"level {q}" for q in range(1, 5)]
    assert level_ax.get_yscale() == "log"  # per-level losses span > 20x
    assert level_ax.get_xlabel() == "epoch" and level_ax.get_title()
    _png_ok(figure, tmp_path / "losses.png")


def test_level_losses_needs_level_columns() -> None:
    with pytest.raises(ValueError, match="quant_loss_l1"):
        plot_level_losses(pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5]}))


def test_code_usage(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 64, (300, 8, 3), generator=generator)
    codes[:, :, 2] = codes[:, :, 2] % 5  # collapsed last level
    figure = plot_code_usage(codes, num_codes=64)
    assert len(figure.axes) == 3
    assert "5/64 codes used" in figure.axes[2].get_title()
    assert "64/64 codes used" in figure.axes[0].get_title()
    _png_ok(figure, tmp_path / "usage.png")


def test_code_usage_grid_for_many_levels() -> None:
    codes = torch.randint(0, 16, (50, 4, 6), generator=torch.Generator().manual_seed(1))
    assert len(plot_code_usage(codes, num_codes=16).axes) == 6  # 2 x 4 grid, 2 empty panels removed


def test_reconstruction_by_level(tmp_path: Path) -> None:
    figure = plot_reconstruction_by_level([0.8, 0.3, 0.12, 0.05])
    (ax,) = figure.axes
    (line,) = ax.get_lines()
    assert line.get_ydata().tolist() == [0.8, 0.3, 0.12, 0.05]
    assert list(ax.get_xticks()) == [1, 2, 3, 4]
    _png_ok(figure, tmp_path / "reconstruction.png")


def test_pca_is_deterministic_and_finds_main_axis() -> None:
    generator = torch.Generator().manual_seed(2)
    data = torch.randn(500, 6, generator=generator) * torch.tensor([10.0, 3.0, 0.1, 0.1, 0.1, 0.1])
    coords, share = pca_2d(data)
    again, _ = pca_2d(data.clone())
    assert torch.equal(coords, again)
    assert share[0] > 0.85 and share[0] + share[1] > 0.99
    assert torch.corrcoef(torch.stack([coords[:, 0], data[:, 0].double()]))[0, 1].abs() > 0.99


def test_code_projection(tmp_path: Path, umls) -> None:  # noqa: ANN001
    degree = umls.graph.in_degrees()
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randn(umls.num_entities, 4, 16, generator=generator)
    embeddings[:, :, 0] += degree.float().log1p()[:, None] * 3  # PC1 follows degree
    figure = plot_code_projection(embeddings, torch.log1p(degree.float()), "log(1 + degree)")
    ax = figure.axes[0]
    assert len(figure.axes) == 2  # scatter + colour bar
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == umls.num_entities
    assert ax.get_xlabel().startswith("PC1") and figure.axes[1].get_ylabel() == "log(1 + degree)"
    _png_ok(figure, tmp_path / "projection.png")
    buckets = torch.bucketize(degree, torch.tensor([10, 50, 100]))  # 4 degree buckets -> discrete colour bar
    colour_bar = plot_code_projection(embeddings, buckets, "degree bucket").axes[1]
    assert [tick.get_text() for tick in colour_bar.get_yticklabels()] == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="colour_values"):
        plot_code_projection(embeddings, degree[:-1], "degree")
