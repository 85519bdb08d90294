"""Link-prediction records on UMLS: true tail first, candidates shown in order, layout robust to names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rq_kg_pipeline.prompts.jsonl import read_jsonl, write_jsonl
from rq_kg_pipeline.prompts.link_prediction import link_prediction_records
from rq_kg_pipeline.prompts.names import prompt_text

K = 10
HEADER_LINES = 4  # instruction, codes explanation, query, "Candidates:"


def _queries(umls) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """Test triples in both directions plus queries between hostile-named entities; a fake model's top-k."""
    test = umls.test
    heads = torch.cat([test[:, 0], test[:, 2], torch.tensor([1, 3])])
    relations = torch.cat([test[:, 1], test[:, 1] + umls.num_relations, torch.tensor([0, 5])])
    targets = torch.cat([test[:, 2], test[:, 0], torch.tensor([4, 2])])
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(heads.shape[0], umls.num_entities, generator=generator)
    boosted = torch.rand(heads.shape[0], generator=generator) < 0.8  # the model finds the answer 80% of the time
    scores[torch.arange(heads.shape[0])[boosted], targets[boosted]] += 0.9
    candidates = scores.topk(K, dim=1).indices  # [N, K] in rank order
    return heads, relations, targets, candidates


def test_records_follow_the_format(umls, prompt_inputs) -> None:  # noqa: ANN001
    heads, relations, targets, candidates = _queries(umls)
    records = list(
        link_prediction_records(
            heads, relations, targets, candidates, prompt_inputs.names, prompt_inputs.rendered,
            prompt_inputs.relation_names,
        )
    )
    assert len(records) == heads.shape[0]
    codes = prompt_inputs.rendered
    for i, record in enumerate(records):
        head, relation, target = int(heads[i]), int(relations[i]), int(targets[i])
        shown = candidates[i].tolist()
        lines = record["prompt"].split("\n")
        assert len(lines) == HEADER_LINES + K + 1
        assert lines[2] == f"Query: ({prompt_text(prompt_inputs.names[head])} {codes[head]}, " \
                           f"{prompt_inputs.relation_names[relation]}, ?)"
        assert lines[HEADER_LINES:HEADER_LINES + K] == [
            f"{prompt_text(prompt_inputs.names[e])} {codes[e]}" for e in shown
        ]
        completion = record["completion"].split("\n")
        assert completion[0] == f"1. {codes[target]}"  # the true tail first
        expected_rest = [e for e in shown if e != target][:2]
        assert completion[1:] == [f"{rank}. {codes[e]}" for rank, e in enumerate(expected_rest, start=2)]
        assert record["answer"] == target and record["answer_codes"] == codes[target]
        assert record["answer_in_candidates"] == (target in shown)
        assert record["candidates"] == shown
        assert record["query"] == {
            "head": head, "relation": relation % umls.num_relations, "inverse": relation >= umls.num_relations
        }
        assert "messages" not in record  # prompt_completion, the default: each prompt once
        assert record["task"] == "link_prediction"
    assert any(r["query"]["inverse"] and "inverse of " in r["prompt"] for r in records)
    assert 0 < sum(not r["answer_in_candidates"] for r in records) < len(records)


def test_hostile_names_survive_jsonl_and_keep_the_layout(umls, prompt_inputs, tmp_path: Path) -> None:  # noqa: ANN001
    heads, relations, targets, candidates = _queries(umls)
    candidates[-2:, :5] = torch.tensor([0, 1, 2, 3, 4])  # hostile names among the candidates
    path = tmp_path / "lp.jsonl"
    written = write_jsonl(
        link_prediction_records(heads[-2:], relations[-2:], targets[-2:], candidates[-2:], prompt_inputs.names,
                                prompt_inputs.rendered, prompt_inputs.relation_names),
        path,
    )
    assert written == 2
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2  # no raw line break inside a record
    first, second = read_jsonl(path)
    assert first["names"]["head"] == prompt_inputs.hostile[1] and first["names"]["answer"] == prompt_inputs.hostile[4]
    assert second["names"]["head"] == prompt_inputs.hostile[3] and second["names"]["answer"] == prompt_inputs.hostile[2]
    for record in (first, second):
        lines = record["prompt"].split("\n")
        assert len(lines) == HEADER_LINES + K + 1
        assert lines[HEADER_LINES].startswith('The "Quoted" one [C1_')
        assert lines[HEADER_LINES + 1].startswith("tab and newline name [C1_")
        assert lines[HEADER_LINES + 2].startswith("back\\slash \\n literal [C1_")
        assert lines[HEADER_LINES + 3].startswith("Zsa Zsa Gábor, 東京 ✓ [C1_")
        assert lines[HEADER_LINES + 4].startswith("para graph break [C1_")


def test_without_codes_and_answer_filter(umls, prompt_inputs) -> None:  # noqa: ANN001
    heads, relations, targets, candidates = _queries(umls)
    flags = torch.arange(heads.shape[0]) % 2 == 0
    records = list(
        link_prediction_records(
            heads, relations, targets, candidates, prompt_inputs.names, prompt_inputs.rendered,
            prompt_inputs.relation_names, without_codes=flags, only_answer_in_candidates=True,
        )
    )
    in_candidates = (candidates == targets[:, None]).any(dim=1)
    assert len(records) == int(in_candidates.sum())
    assert all(r["answer_in_candidates"] for r in records)
    kept = torch.nonzero(in_candidates).squeeze(1).tolist()
    for index, record in zip(kept, records):
        assert record["with_codes"] == (not bool(flags[index]))
        if record["with_codes"]:
            assert "[C1_" in record["prompt"] and record["completion"].startswith("1. [C1_")
        else:
            assert "[C" not in record["prompt"] and "[C" not in record["completion"]
            assert record["completion"].split("\n")[0] == f"1. {prompt_text(prompt_inputs.names[int(targets[index])])}"


@pytest.mark.parametrize("record_format", ["messages", "both"])
def test_record_formats_hold_the_same_text(umls, prompt_inputs, record_format: str) -> None:  # noqa: ANN001
    heads, relations, targets, candidates = _queries(umls)
    args = (heads, relations, targets, candidates, prompt_inputs.names, prompt_inputs.rendered,
            prompt_inputs.relation_names)
    plain = list(link_prediction_records(*args))
    other = list(link_prediction_records(*args, record_format=record_format, chunk_size=7))
    assert len(other) == len(plain)
    for a, b in zip(plain, other):
        chat = [{"role": "user", "content": a["prompt"]}, {"role": "assistant", "content": a["completion"]}]
        assert b["messages"] == chat
        assert ("prompt" in b) == (record_format == "both")
        expected = dict(a) if record_format == "both" else {k: v for k, v in a.items() if k not in ("prompt", "completion")}
        assert {k: v for k, v in b.items() if k != "messages"} == expected


def test_padded_candidates_are_dropped(umls, prompt_inputs) -> None:  # noqa: ANN001
    heads, relations, targets, candidates = _queries(umls)
    candidates = candidates[:3].clone()
    candidates[0, 2:] = -1  # two candidates left
    candidates[1, :] = -1  # none left: the completion is the true tail alone
    candidates[2, 0] = -1  # padding first is moved last
    records = list(link_prediction_records(heads[:3], relations[:3], targets[:3], candidates, prompt_inputs.names,
                                           prompt_inputs.rendered, prompt_inputs.relation_names))
    assert records[0]["candidates"] == candidates[0, :2].tolist()
    assert len(records[0]["prompt"].split("\n")) == HEADER_LINES + 2 + 1
    assert records[1]["candidates"] == [] and records[1]["completion"] == f"1. {prompt_inputs.rendered[int(targets[1])]}"
    assert "top-1 most likely" in records[1]["prompt"]
    assert records[2]["candidates"] == candidates[2, 1:].tolist()


def test_invalid_inputs_raise(umls, prompt_inputs) -> None:  # noqa: ANN001
    heads, relations, targets, candidates = _queries(umls)
    args = (prompt_inputs.names, prompt_inputs.rendered, prompt_inputs.relation_names)
    with pytest.raises(ValueError, match="relations"):
        next(link_prediction_records(heads, relations + 2 * umls.num_relations, targets, candidates, *args))
    with pytest.raises(ValueError, match="same number of queries"):
        next(link_prediction_records(heads[:-1], relations, targets, candidates, *args))
    with pytest.raises(ValueError, match="candidates"):
        next(link_prediction_records(heads, relations, targets, candidates.float(), *args))
    with pytest.raises(ValueError, match="record_format"):
        link_prediction_records(heads, relations, targets, candidates, *args, record_format="alpaca")
