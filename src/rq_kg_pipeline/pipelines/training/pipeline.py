"""Wiring of the training pipeline."""

from kedro.pipeline import Node, Pipeline

from rq_kg_pipeline.pipelines.training.nodes import train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_model,
                inputs=[
                    "kg_graph",
                    "train_ids",
                    "valid_ids",
                    "test_ids",
                    "params:training.model",
                    "params:training.fit",
                    "params:training.checkpoint_dir",
                    "params:dataset_name",
                ],
                outputs=["model_checkpoint", "training_history"],
                name="train_model",
            )
        ]
    )
