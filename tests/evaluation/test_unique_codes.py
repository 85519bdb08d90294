"""Disambiguation index: (codes, index) names exactly one entity, in entity-id order within a group."""

from __future__ import annotations

from collections import Counter

import torch

from rq_kg_pipeline.evaluation.unique_codes import disambiguation_index


def test_hand_built_groups() -> None:
    a, b, c = [[1, 2]], [[3, 4]], [[5, 6]]
    codes = torch.tensor([a, b, a, c, a, b])  # [6, 1, 2]
    index, collided = disambiguation_index(codes)
    assert index.tolist() == [0, 0, 1, 0, 2, 1]
    assert index.dtype == torch.int64
    assert collided == 5


def test_unique_codes_get_zero() -> None:
    codes = torch.arange(24).reshape(4, 3, 2)
    index, collided = disambiguation_index(codes)
    assert index.tolist() == [0, 0, 0, 0]
    assert collided == 0


def test_round_trip_on_colliding_codes() -> None:
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 3, (2000, 2, 2), generator=generator)  # 81 possible sequences: many collisions
    index, collided = disambiguation_index(codes)
    keys = [(tuple(row.reshape(-1).tolist()), int(i)) for row, i in zip(codes, index)]
    lookup = dict(zip(keys, range(len(keys))))
    assert len(lookup) == codes.shape[0]
    assert all(lookup[key] == entity for entity, key in enumerate(keys))
    sequence_counts = Counter(key[0] for key in keys)
    assert collided == sum(n for n in sequence_counts.values() if n > 1)
    # indices in a group are 0..n-1 and increase with entity id
    for sequence, n in sequence_counts.items():
        members = [i for i, key in enumerate(keys) if key[0] == sequence]
        assert [keys[i][1] for i in members] == list(range(n))
    again, collided_again = disambiguation_index(codes.clone())
    assert torch.equal(index, again) and collided == collided_again


def test_fb15k237_scale_with_many_collisions() -> None:
    codes = torch.randint(0, 4, (14541, 16, 4), generator=torch.Generator().manual_seed(1))
    codes[:, 1:] = 0  # at most 4**4 = 256 distinct sequences for 14,541 entities
    index, collided = disambiguation_index(codes)
    assert collided == 14541 and int(index.max()) >= 14541 // 256
