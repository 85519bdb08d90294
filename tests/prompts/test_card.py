"""Dataset card: counts per task and split, token format, tokens per entity, parameters, checkpoint hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rq_kg_pipeline.prompts.card import dataset_card


def test_card_content() -> None:
    card = dataset_card(
        title="UMLS code-token instructions",
        counts={"link_prediction": {"train": 1200, "test": 300}, "triple_classification": {"train": 2400}},
        num_codes=64,
        num_quantizers=3,
        seq_len=4,
        tokens_per_entity=13,
        vocabulary_size=3 * 64 + 3,
        max_disambiguation=2,
        checkpoint_sha256="ab" * 32,
        parameters={"num_answers": 3, "negative_ratio": 1},
        example_entity=('say "hi"', "[C1_1] [C2_2] [C3_3] [D0]"),
        code_stats={"unique_code_rate": 0.98, "utilisation_l1": 0.5, "perplexity_l1": 20.0, "entropy_bits_l1": 4.3},
    )
    assert card.startswith("# UMLS code-token instructions")
    assert "| task | test | train | total |" in card
    assert "| link_prediction | 300 | 1,200 | 1,500 |" in card
    assert "| triple_classification | 0 | 2,400 | 2,400 |" in card
    assert "`[C1_5]` and `[C2_5]` are different tokens" in card
    assert "`[D0]` .. `[D2]`" in card
    assert "Tokens per entity: 13 (4 positions x 3 levels + 1 disambiguation token)" in card
    assert "New tokens to add to the LLM tokenizer: 195" in card
    assert '"negative_ratio": 1' in card
    assert "ab" * 32 in card
    assert "level 1: utilisation 0.500, perplexity 20.0, entropy 4.30 bits" in card
    assert 'Example: "say \\"hi\\"" ->' in card
    assert "one record per line with `prompt`, `completion`, `task`" in card


def test_card_for_plain_vq_without_collisions() -> None:
    card = dataset_card(
        title="t", counts={"link_prediction": {"train": 1}}, num_codes=8, num_quantizers=1, seq_len=16,
        tokens_per_entity=16, vocabulary_size=8, max_disambiguation=0, checkpoint_sha256="0" * 64, parameters={},
        record_format="messages",
    )
    assert "one record per line with `messages` (a user and an assistant chat turn)" in card
    assert "`[CODE0]` .. `[CODE7]`" in card
    assert "no disambiguation token is used" in card
    assert "Tokens per entity: 16 (16 positions x 1 level)." in card
