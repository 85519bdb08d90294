"""Code-token format: level-distinct tokens, a covering vocabulary, rendering and its inverse."""

from __future__ import annotations

import time

import pytest
import torch

from rq_kg_pipeline.evaluation.unique_codes import disambiguation_index
from rq_kg_pipeline.prompts.tokens import (
    code_token,
    code_token_vocabulary,
    parse_entity_codes,
    render_entity_codes,
    tokens_per_entity,
)


def _codes(num_entities: int, seq_len: int, num_quantizers: int, num_codes: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_codes, (num_entities, seq_len, num_quantizers), generator=generator)


def test_tokens_are_level_distinct_and_vq_uses_reference_format() -> None:
    assert code_token(1, 5, 4) == "[C1_5]"
    assert code_token(2, 5, 4) == "[C2_5]"
    assert code_token(1, 5, 1) == "[CODE5]"
    vocabulary = code_token_vocabulary(num_codes=8, num_quantizers=3)
    assert len(vocabulary) == len(set(vocabulary)) == 24
    assert vocabulary[:2] == ["[C1_0]", "[C1_1]"] and vocabulary[-1] == "[C3_7]"
    assert code_token_vocabulary(4, 1) == ["[CODE0]", "[CODE1]", "[CODE2]", "[CODE3]"]
    assert code_token_vocabulary(4, 2, max_disambiguation=2)[-3:] == ["[D0]", "[D1]", "[D2]"]
    with pytest.raises(ValueError, match="level"):
        code_token(5, 0, 4)


def test_render_order_is_position_major() -> None:
    codes = torch.tensor([[[1, 2], [3, 4], [5, 6]]])  # [1, L=3, Q=2]
    assert render_entity_codes(codes) == ["[C1_1] [C2_2] [C1_3] [C2_4] [C1_5] [C2_6]"]
    assert render_entity_codes(codes, separator="") == ["[C1_1][C2_2][C1_3][C2_4][C1_5][C2_6]"]
    assert render_entity_codes(torch.tensor([[7, 0, 3]])) == ["[CODE7] [CODE0] [CODE3]"]  # plain VQ [M, L]


@pytest.mark.parametrize("num_quantizers", [1, 3])
def test_vocabulary_covers_rendering_and_parse_inverts_it(num_quantizers: int) -> None:
    codes = _codes(500, 3, num_quantizers, num_codes=4)
    codes[100:150] = codes[:50]  # collisions
    codes[150:160] = codes[0]  # a group of 12
    index, collided = disambiguation_index(codes)
    assert collided >= 100 and int(index.max()) >= 11
    rendered = render_entity_codes(codes, index)
    vocabulary = set(code_token_vocabulary(4, num_quantizers, int(index.max())))
    used = {token for text in rendered for token in text.split(" ")}
    assert used <= vocabulary
    assert any(token.startswith("[D") for token in used)
    per_entity = tokens_per_entity(codes, index)
    assert per_entity == 3 * num_quantizers + 1
    assert {len(text.split(" ")) for text in rendered} == {per_entity}
    assert len(set(rendered)) == len(rendered)  # disambiguated renderings are unique
    for entity, text in enumerate(rendered):
        parsed, d = parse_entity_codes(text)
        assert torch.equal(parsed, codes[entity]) and d == int(index[entity])


def test_no_disambiguation_token_without_collisions() -> None:
    codes = torch.arange(40).reshape(5, 4, 2)
    index, collided = disambiguation_index(codes)
    assert collided == 0
    rendered = render_entity_codes(codes, index)
    assert all("[D" not in text for text in rendered)
    assert tokens_per_entity(codes, index) == 8
    parsed, d = parse_entity_codes(rendered[2])
    assert torch.equal(parsed, codes[2]) and d is None


def test_parse_rejects_out_of_order_tokens() -> None:
    with pytest.raises(ValueError, match="position-major"):
        parse_entity_codes("[C1_1] [C1_2] [C2_3]")
    with pytest.raises(ValueError, match="no code tokens"):
        parse_entity_codes("nothing here")


def test_fb15k237_scale_renders_fast() -> None:
    codes = _codes(14541, 16, 4, num_codes=1024)
    start = time.perf_counter()
    rendered = render_entity_codes(codes)
    assert time.perf_counter() - start < 2.0
    assert len(rendered) == 14541 and len(rendered[0].split(" ")) == 64
