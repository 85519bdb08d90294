"""Kedro datasets for what kedro-datasets has none for: strict KG TSVs, tensors, graphs."""

from rq_kg_pipeline.datasets.dgl_graph import DGLGraphDataset
from rq_kg_pipeline.datasets.entity_codes import EntityCodesDataset
from rq_kg_pipeline.datasets.jsonl import JSONLinesDataset
from rq_kg_pipeline.datasets.kg_graph import KGGraphDataset
from rq_kg_pipeline.datasets.kg_tsv import KGTableDataset
from rq_kg_pipeline.datasets.torch_tensor import TorchTensorDataset

__all__ = ["DGLGraphDataset", "EntityCodesDataset", "JSONLinesDataset", "KGGraphDataset", "KGTableDataset", "TorchTensorDataset"]
