"""rq_kg_pipeline: residual-quantized entity codes for knowledge graphs, as a Kedro project."""

__version__ = "0.1.0"
