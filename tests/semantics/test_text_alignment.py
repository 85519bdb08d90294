"""Neighbour agreement between code-decoded vectors and text embeddings, on constructed answers."""

from __future__ import annotations

import pytest
import torch

from rq_kg_pipeline.semantics.alignment import neighbour_agreement


def test_same_geometry_agrees_fully_and_a_scrambled_one_near_chance():
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(300, 16, generator=generator)
    every = torch.ones(300, dtype=torch.bool)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator))
    same = neighbour_agreement(2.0 * text @ rotation, text, every, k=5)  # cosine geometry unchanged
    assert same["text_neighbour_agreement"] == pytest.approx(1.0)
    scrambled = neighbour_agreement(text[torch.randperm(300, generator=generator)], text, every, k=5, batch_size=64)
    assert scrambled["text_neighbour_agreement"] < 0.1 and scrambled["text_neighbour_chance"] == pytest.approx(5 / 299)


def test_masked_entities_take_no_part():
    text = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    codes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.95, 0.05], [0.1, 0.9]])  # entity 1 points elsewhere
    mask = torch.tensor([True, False, True, True])
    # among {0, 2, 3}: by text 0 -> 3 (nearest after itself), 2 -> 3, 3 -> 2; by codes 0 -> 2, 2 -> 0, 3 -> 2
    assert neighbour_agreement(codes, text, mask, k=1)["text_neighbour_agreement"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="k must be in"):
        neighbour_agreement(codes, text, mask, k=3)
