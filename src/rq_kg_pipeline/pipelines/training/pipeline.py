"""Wiring of the training pipeline: entity text embeddings (cached), then the model."""

from kedro.pipeline import Node, Pipeline

from rq_kg_pipeline.pipelines.training.nodes import entity_text_embeddings, train_model


def text_embeddings_node() -> Node:
    """The one node that embeds entity texts (also part of ``compare``; Kedro runs it once)."""
    return Node(
        entity_text_embeddings,
        inputs=["entity_vocab", "entity_names", "params:training.text_embeddings", "params:training.fit"],
        outputs="text_embeddings",
        name="entity_text_embeddings",
    )


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            text_embeddings_node(),
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
                    "text_embeddings",
                    "params:training.distributed",
                ],
                outputs=["model_checkpoint", "training_history"],
                name="train_model",
            ),
        ]
    )
