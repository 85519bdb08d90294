"""Wiring of gen_llm_data: runs alone from the catalogued codes, vocabularies, names, triples and model.

Ranking (model inference) writes ``link_prediction_candidates``; every node that writes text
is tagged ``prompt_writing``, so ``kedro run --pipelines=gen_llm_data --tags=prompt_writing``
rewrites the JSONL files from the saved candidates without ranking again.
"""

from kedro.pipeline import Node, Pipeline

from rq_kg_pipeline.pipelines.gen_llm_data.nodes import (
    SPLITS,
    link_prediction_split,
    prepare_entity_text,
    rank_candidates,
    triple_classification_split,
    write_dataset_card,
)

TASKS = ("link_prediction", "triple_classification")
WRITING = "prompt_writing"


def create_pipeline(**kwargs) -> Pipeline:
    ids = ["train_ids", "valid_ids", "test_ids"]
    params = "params:gen_llm_data"
    writers = [
        Node(
            link_prediction_split(split),
            inputs=["entity_text", "link_prediction_candidates", *ids, params],
            outputs=f"link_prediction_{split}_jsonl",
            name=f"write_link_prediction_{split}",
            tags=[WRITING],
        )
        for split in SPLITS
    ] + [
        Node(
            triple_classification_split(split),
            inputs=["entity_text", *ids, params],
            outputs=f"triple_classification_{split}_jsonl",
            name=f"write_triple_classification_{split}",
            tags=[WRITING],
        )
        for split in SPLITS
    ]
    card_inputs = {
        "entity_codes": "entity_codes",
        "code_statistics": "code_statistics",
        "code_token_vocabulary": "code_token_vocabulary",
        "entity_text": "entity_text",
        "params": params,
        "dataset_name": "params:dataset_name",
        **{f"{task}_{split}": f"{task}_{split}_jsonl" for task in TASKS for split in SPLITS},
    }
    return Pipeline(
        [
            Node(
                prepare_entity_text,
                inputs=["entity_codes", "entity_vocab", "entity_names", "relation_vocab"],
                outputs=["entity_text", "code_token_vocabulary"],
                name="prepare_entity_text",
                tags=[WRITING],
            ),
            Node(
                rank_candidates,
                inputs=["model_checkpoint", "kg_graph", "entity_codes", *ids, params],
                outputs="link_prediction_candidates",
                name="rank_candidates",
            ),
            *writers,
            Node(
                write_dataset_card, inputs=card_inputs, outputs="llm_dataset_card", name="write_dataset_card", tags=[WRITING]
            ),
        ]
    )
