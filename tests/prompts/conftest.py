"""Prompt-builder inputs from UMLS: display names (some made hostile), rendered codes, relation names."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
import torch

from rq_kg_pipeline.evaluation.unique_codes import disambiguation_index
from rq_kg_pipeline.prompts.names import entity_display_names, relation_display_names
from rq_kg_pipeline.prompts.tokens import render_entity_codes

HOSTILE_NAMES = {
    0: 'The "Quoted" one',
    1: "tab\tand\nnewline\r\nname",
    2: "back\\slash \\n literal",
    3: "Zsa Zsa Gábor, 東京 ✓",
    4: "para\u2028graph\x85break",
}


@dataclass
class PromptInputs:
    """Everything the record builders read, for the UMLS entities and relations."""

    names: list[str]
    codes: torch.Tensor  # [M, L, Q]
    rendered: list[str]
    relation_names: list[str]  # 2R
    hostile: dict[int, str]  # entity id -> the hostile name it was given


@pytest.fixture(scope="session")
def prompt_inputs(umls) -> PromptInputs:  # noqa: ANN001
    vocab = pd.DataFrame({"id": range(umls.num_entities), "label": umls.entity_labels})
    table = pd.DataFrame({"id": [umls.entity_labels[i] for i in HOSTILE_NAMES], "name": list(HOSTILE_NAMES.values())})
    names, _ = entity_display_names(vocab, table)
    codes = torch.randint(0, 16, (umls.num_entities, 4, 3), generator=torch.Generator().manual_seed(0))
    codes[7] = codes[8]  # one collision, so a [D*] token is in play
    index, _ = disambiguation_index(codes)
    rendered = render_entity_codes(codes, index)
    return PromptInputs(names, codes, rendered, relation_display_names(umls.relation_labels), HOSTILE_NAMES)


