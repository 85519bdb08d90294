"""Wiring of the ingestion pipeline."""

from kedro.pipeline import Node, Pipeline

from rq_kg_pipeline.pipelines.ingestion.nodes import build_training_graph, convert_to_dgl, index_triples, summarise_kg


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                index_triples,
                inputs=["raw_train", "raw_valid", "raw_test", "raw_names", "params:ingestion"],
                outputs=[
                    "entity_vocab",
                    "relation_vocab",
                    "train_ids",
                    "valid_ids",
                    "test_ids",
                    "entity_names",
                    "ingestion_counts",
                ],
                name="index_triples",
            ),
            Node(
                build_training_graph,
                inputs=["train_ids", "entity_vocab", "relation_vocab"],
                outputs="kg_graph",
                name="build_training_graph",
            ),
            Node(convert_to_dgl, inputs="kg_graph", outputs="kg_dgl_graph", name="convert_to_dgl"),
            Node(
                summarise_kg,
                inputs=["kg_graph", "train_ids", "valid_ids", "test_ids", "ingestion_counts"],
                outputs=["kg_statistics", "kg_statistics_metrics"],
                name="summarise_kg",
            ),
        ]
    )
