"""Wiring of the evaluation pipeline."""

from kedro.pipeline import Node, Pipeline

from rq_kg_pipeline.pipelines.evaluation.nodes import evaluate_link_prediction, plot_codes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                evaluate_link_prediction,
                inputs=[
                    "model_checkpoint",
                    "kg_graph",
                    "entity_codes",
                    "train_ids",
                    "valid_ids",
                    "test_ids",
                    "params:evaluation",
                ],
                outputs=["link_prediction_report", "link_prediction_metrics"],
                name="evaluate_link_prediction",
            ),
            Node(
                plot_codes,
                inputs=["training_history", "entity_codes", "code_statistics", "kg_graph"],
                outputs=["plot_level_losses", "plot_code_usage", "plot_reconstruction", "plot_code_projection"],
                name="plot_codes",
            ),
        ]
    )
