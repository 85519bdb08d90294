"""Wiring of the extraction pipeline."""

from kedro.pipeline import Node, Pipeline

from rq_kg_pipeline.pipelines.extraction.nodes import extract_entity_codes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                extract_entity_codes,
                inputs=["model_checkpoint", "kg_graph", "entity_vocab", "params:extraction", "params:dataset_name"],
                outputs=["entity_codes", "code_statistics", "code_statistics_metrics"],
                name="extract_entity_codes",
            )
        ]
    )
