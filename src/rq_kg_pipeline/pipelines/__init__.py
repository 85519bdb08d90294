"""Kedro pipelines: one folder each, nodes.py (thin adapters) + pipeline.py (wiring only)."""
