"""gen_llm_data: instruction datasets (link prediction, triple classification) in which entities are their codes."""

from rq_kg_pipeline.pipelines.gen_llm_data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
