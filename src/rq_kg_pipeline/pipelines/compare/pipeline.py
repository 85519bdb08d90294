"""Wiring of compare: one namespaced training -> extraction -> evaluation chain per arm, then a table.

Each arm is a Kedro namespace (``vq``, ``rq``), so kedro-viz draws them as two collapsible
groups over the shared ingestion outputs.
"""

from kedro.pipeline import Node, Pipeline

from rq_kg_pipeline.pipelines.compare.nodes import compare_arms, train_arm
from rq_kg_pipeline.pipelines.evaluation.nodes import evaluate_link_prediction
from rq_kg_pipeline.pipelines.extraction.nodes import extract_entity_codes

ARMS = ("vq", "rq")
SHARED_INPUTS = {"kg_graph", "train_ids", "valid_ids", "test_ids", "entity_vocab"}


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
    ]
    shared_params = {p for n in nodes for p in n.inputs if p.startswith("params:")}  # not namespaced
    return Pipeline(nodes, namespace=arm, inputs=SHARED_INPUTS, parameters=shared_params)


def create_pipeline(**kwargs) -> Pipeline:
    reports = {}
    for arm in ARMS:
        reports[f"{arm}_link_prediction"] = f"{arm}.link_prediction_report"
        reports[f"{arm}_code_statistics"] = f"{arm}.code_statistics"
        reports[f"{arm}_model"] = f"{arm}.model_checkpoint"
    table = Node(
        compare_arms,
        inputs={"dataset_name": "params:dataset_name", **reports},
        outputs=["comparison_table", "comparison_report"],
        name="compare_arms",
    )
    return Pipeline([*(arm_pipeline(arm) for arm in ARMS), table])
