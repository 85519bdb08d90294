"""Wiring of compare: one namespaced training -> extraction -> evaluation chain per arm, then a table.

Each arm is a Kedro namespace (``vq``, ``rq``, ``rq_no_text``), so kedro-viz draws them as
collapsible groups over the shared ingestion outputs and entity text embeddings.
"""

from kedro.pipeline import Node, Pipeline

from rq_kg_pipeline.pipelines.compare.nodes import compare_arms, text_alignment, train_arm
from rq_kg_pipeline.pipelines.evaluation.nodes import evaluate_link_prediction
from rq_kg_pipeline.pipelines.extraction.nodes import extract_entity_codes
from rq_kg_pipeline.pipelines.training.pipeline import text_embeddings_node

ARMS = ("vq", "rq", "rq_no_text")
# compare_arms argument suffix -> the arm's output it reads
REPORTED = {
    "link_prediction": "link_prediction_report",
    "code_statistics": "code_statistics",
    "model": "model_checkpoint",
    "text_alignment": "text_alignment",
}
SHARED_INPUTS = {"kg_graph", "train_ids", "valid_ids", "test_ids", "entity_vocab", "text_embeddings"}


def arm_pipeline(arm: str) -> Pipeline:
    ids = ["train_ids", "valid_ids", "test_ids"]
    nodes = [
        Node(
            train_arm(arm),
            inputs=[
                "kg_graph",
                *ids,
                "params:training.model",
                f"params:compare.{arm}",
                "params:training.fit",
                "params:training.checkpoint_dir",
                "params:dataset_name",
                "text_embeddings",
            ],
            outputs=["model_checkpoint", "training_history"],
            name="train",
        ),
        Node(
            extract_entity_codes,
            inputs=["model_checkpoint", "kg_graph", "entity_vocab", "params:extraction", "params:dataset_name"],
            outputs=["entity_codes", "code_statistics", "code_statistics_metrics"],
            name="extract",
        ),
        Node(
            evaluate_link_prediction,
            inputs=["model_checkpoint", "kg_graph", "entity_codes", *ids, "params:evaluation"],
            outputs=["link_prediction_report", "link_prediction_metrics"],
            name="evaluate",
        ),
        Node(
            text_alignment,
            inputs=["model_checkpoint", "entity_codes", "text_embeddings"],
            outputs="text_alignment",
            name="text_alignment",
        ),
    ]
    shared_params = {p for n in nodes for p in n.inputs if p.startswith("params:")}  # not namespaced
    # What the table reads leaves the namespace under plain names (``vq_link_prediction_report``):
    # a node outside the namespace may not name ``vq.link_prediction_report`` (Kedro reserves dots).
    reported = {name: f"{arm}_{name}" for name in REPORTED.values()}
    return Pipeline(nodes, namespace=arm, inputs=SHARED_INPUTS, outputs=reported, parameters=shared_params)


def create_pipeline(**kwargs) -> Pipeline:
    reports = {f"{arm}_{key}": f"{arm}_{name}" for arm in ARMS for key, name in REPORTED.items()}
    table = Node(
        compare_arms,
        inputs={"dataset_name": "params:dataset_name", **reports},
        outputs=["comparison_table", "comparison_report"],
        name="compare_arms",
    )
    return Pipeline([text_embeddings_node(), *(arm_pipeline(arm) for arm in ARMS), table])
