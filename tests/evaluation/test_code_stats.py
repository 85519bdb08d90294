"""Code statistics on hand-built code tables and reconstruction error on hand-built levels."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rq_kg_pipeline.evaluation.code_stats import code_statistics, reconstruction_mse_by_level, unique_rows

# 4 entities, L = 2 positions, Q = 2 levels, K = 4 codes; entities 0 and 1 collide.
CODES = torch.tensor(
    [
        [[0, 1], [2, 3]],
        [[0, 1], [2, 3]],
        [[1, 1], [2, 0]],
        [[0, 0], [0, 0]],
    ]
)


def _entropy_bits(counts: list[int]) -> float:
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c)


def test_statistics_match_hand_computed_values() -> None:
    stats = code_statistics(CODES, num_codes=4)
    assert stats["unique_code_rate"] == 0.5
    assert stats["num_collided_entities"] == 2
    assert stats["num_distinct_sequences"] == 3
    # level 1 values: 0,2 | 0,2 | 1,2 | 0,0 -> counts {0: 4, 1: 1, 2: 3, 3: 0}
    assert stats["utilisation_l1"] == 0.75
    assert stats["entropy_bits_l1"] == pytest.approx(_entropy_bits([4, 1, 3]))
    assert stats["entropy_bits_l1"] == pytest.approx(0.5 + 0.375 + 0.375 * math.log2(8 / 3))
    assert stats["perplexity_l1"] == pytest.approx(2 ** stats["entropy_bits_l1"])
    # level 2 values: 1,3 | 1,3 | 1,0 | 0,0 -> counts {0: 3, 1: 3, 2: 0, 3: 2}
    assert stats["utilisation_l2"] == 0.75
    assert stats["entropy_bits_l2"] == pytest.approx(_entropy_bits([3, 3, 2]))
    # position 1 tuples (0,1),(0,1),(1,1),(0,0); position 2 (2,3),(2,3),(2,0),(0,0)
    assert stats["distinct_codes_per_position"] == [3, 3]
    json.dumps(stats)  # plain Python values only
    assert all(isinstance(v, (int, float, list)) for v in stats.values())


def test_uniform_usage_has_full_perplexity() -> None:
    codes = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]).reshape(2, 4, 1).repeat(1, 1, 3)  # each code twice per level
    stats = code_statistics(codes, num_codes=4)
    for level in (1, 2, 3):
        assert stats[f"utilisation_l{level}"] == 1.0
        assert stats[f"entropy_bits_l{level}"] == pytest.approx(2.0)
        assert stats[f"perplexity_l{level}"] == pytest.approx(4.0)
    assert stats["unique_code_rate"] == 1.0
    assert stats["num_collided_entities"] == 0


def test_collapsed_level_has_perplexity_one() -> None:
    codes = torch.zeros(5, 3, 2, dtype=torch.long)
    codes[:, :, 1] = torch.arange(15).reshape(5, 3) % 7
    stats = code_statistics(codes, num_codes=8)
    assert stats["perplexity_l1"] == pytest.approx(1.0)
    assert stats["entropy_bits_l1"] == pytest.approx(0.0)
    assert stats["utilisation_l1"] == 1 / 8
    assert stats["utilisation_l2"] == 7 / 8


@pytest.mark.parametrize(
    ("codes", "num_codes"),
    [(CODES, 3), (CODES - 1, 4), (CODES.float(), 4), (CODES[0], 4)],
)
def test_invalid_codes_raise(codes: torch.Tensor, num_codes: int) -> None:
    with pytest.raises(ValueError, match="codes"):
        code_statistics(codes, num_codes)


def test_reconstruction_error_by_level() -> None:
    z = torch.tensor([[[1.0, -2.0]], [[0.5, 0.0]]])  # [N=2, L=1, D=2]
    levels = torch.stack([z * 0.5, z * 0.25, z * 0.25], dim=2)  # [2, 1, 3, 2], sums to z
    errors = reconstruction_mse_by_level(z, levels)
    mean_square = float(z.pow(2).mean())
    assert errors == pytest.approx([0.25 * mean_square, 0.0625 * mean_square, 0.0])
    assert errors[0] > errors[1] > errors[2]


def test_reconstruction_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="level_vectors"):
        reconstruction_mse_by_level(torch.zeros(2, 3, 4), torch.zeros(2, 3, 2, 5))


@pytest.mark.parametrize(("rows", "cols", "high"), [(1, 3, 5), (500, 1, 4), (500, 4, 3), (300, 64, 2), (2000, 2, 1000)])
def test_unique_rows_are_torch_unique_over_rows(rows: int, cols: int, high: int) -> None:
    """The same groups, in the same order, with the same counts as torch.unique(dim=0) (few
    distinct values: many duplicate rows; many: mostly distinct)."""
    table = torch.randint(0, high, (rows, cols), generator=torch.Generator().manual_seed(rows + cols))
    _, inverse, counts = torch.unique(table, dim=0, return_inverse=True, return_counts=True)
    got_inverse, got_counts = unique_rows(table)
    assert torch.equal(got_inverse, inverse) and torch.equal(got_counts, counts)
