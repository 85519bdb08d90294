"""Project pipelines: every folder under pipelines/ is found; ``__default__`` chains the five
stages (ingestion -> training -> extraction -> evaluation -> gen_llm_data); ``compare`` (VQ vs
RQ, a second training) runs on request."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    stages = ("ingestion", "training", "extraction", "evaluation", "gen_llm_data")
    # `kedro run --pipelines=X` makes find_pipelines load only what was asked for.
    pipelines["__default__"] = sum((pipelines[name] for name in stages if name in pipelines), Pipeline([]))
    return pipelines
