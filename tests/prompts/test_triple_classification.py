"""Negative sampling never yields a known triple and is seeded; True/False records carry their triple."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rq_kg_pipeline.prompts.jsonl import read_jsonl, write_jsonl
from rq_kg_pipeline.prompts.names import prompt_text
from rq_kg_pipeline.prompts.triple_classification import sample_negatives, triple_classification_records


def _known(umls) -> torch.Tensor:  # noqa: ANN001
    return torch.cat([umls.train, umls.valid, umls.test])


def test_negatives_are_never_known_and_corrupt_one_side(umls) -> None:  # noqa: ANN001
    known = _known(umls)
    positives = umls.train  # dense: UMLS has ~5k triples over 135 entities
    negatives = sample_negatives(positives, known, umls.num_entities, ratio=2, seed=7)
    assert negatives.shape == (2 * positives.shape[0], 3) and negatives.dtype == torch.int64
    known_set = set(map(tuple, known.tolist()))
    assert not any(tuple(row) in known_set for row in negatives.tolist())
    source = positives.repeat_interleave(2, dim=0)
    assert torch.equal(negatives[:, 1], source[:, 1])
    head_changed = negatives[:, 0] != source[:, 0]
    tail_changed = negatives[:, 2] != source[:, 2]
    assert bool((head_changed ^ tail_changed).all())  # exactly one side corrupted
    assert 0.45 < float(head_changed.float().mean()) < 0.55
    assert int(negatives[:, [0, 2]].min()) >= 0 and int(negatives[:, [0, 2]].max()) < umls.num_entities


def test_negatives_are_deterministic_for_a_seed(umls) -> None:  # noqa: ANN001
    known = _known(umls)
    first = sample_negatives(umls.test, known, umls.num_entities, ratio=3, seed=1)
    again = sample_negatives(umls.test.clone(), known.clone(), umls.num_entities, ratio=3, seed=1)
    other = sample_negatives(umls.test, known, umls.num_entities, ratio=3, seed=2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_impossible_corruption_raises() -> None:
    every_triple = torch.tensor([[h, 0, t] for h in range(2) for t in range(2)])
    with pytest.raises(ValueError, match="known triples"):
        sample_negatives(every_triple[:1], every_triple, num_entities=2, ratio=1, seed=0)
    with pytest.raises(ValueError, match="ratio"):
        sample_negatives(every_triple, every_triple, num_entities=2, ratio=0, seed=0)


def test_records(umls, prompt_inputs, tmp_path: Path) -> None:  # noqa: ANN001
    positives = torch.cat([umls.test[:20], torch.tensor([[1, 3, 4]])])  # last one between hostile names
    negatives = sample_negatives(positives, _known(umls), umls.num_entities, ratio=1, seed=0)
    triples = torch.cat([positives, negatives])
    labels = torch.cat([torch.ones(len(positives), dtype=torch.bool), torch.zeros(len(negatives), dtype=torch.bool)])
    records = triple_classification_records(
        triples, labels, prompt_inputs.names, prompt_inputs.rendered, prompt_inputs.relation_names
    )
    path = tmp_path / "tc.jsonl"
    assert write_jsonl(records, path) == len(triples)
    loaded = list(read_jsonl(path))
    codes = prompt_inputs.rendered
    for (head, relation, tail), label, record in zip(triples.tolist(), labels.tolist(), loaded):
        assert record["task"] == "triple_classification"
        assert record["triple"] == [head, relation, tail] and record["label"] is label
        assert record["completion"] == ("True" if label else "False")
        lines = record["prompt"].split("\n")
        assert len(lines) == 4
        assert lines[2] == (
            f"Triple: ({prompt_text(prompt_inputs.names[head])} {codes[head]}, "
            f"{prompt_inputs.relation_names[relation]}, {prompt_text(prompt_inputs.names[tail])} {codes[tail]})"
        )
        assert record["names"]["head"] == prompt_inputs.names[head]
    assert loaded[20]["names"] == {
        "head": prompt_inputs.hostile[1], "relation": prompt_inputs.relation_names[3], "tail": prompt_inputs.hostile[4]
    }
    plain = next(iter(triple_classification_records(triples[:1], True, prompt_inputs.names, codes,
                                                    prompt_inputs.relation_names, without_codes=True)))
    assert "[C" not in plain["prompt"] and plain["with_codes"] is False
    chat = list(triple_classification_records(triples, labels, prompt_inputs.names, codes, prompt_inputs.relation_names,
                                              record_format="messages", chunk_size=5))
    assert [r["messages"] for r in chat] == [
        [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}] for r in loaded
    ]
    assert all("prompt" not in r for r in chat)
