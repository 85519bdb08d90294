"""The one way this project imports DGL.

``dgl==2.1.0`` (the last PyPI release, CPU-only) imports its optional ``graphbolt``
sub-library at import time, and graphbolt ships no build for current torch, so a plain
``import dgl`` fails. Registering an empty module under ``dgl.graphbolt`` before the import
lets the rest of DGL (graphs, message passing, ``save_graphs``) work; graphbolt itself
(sampling pipelines) stays unavailable, and nothing here uses it.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Any

import torch

from rq_kg_pipeline.kg.graph import KGGraph

_STUBBED = ("dgl.graphbolt",)


def import_dgl() -> Any:
    """Return the ``dgl`` module, stubbing the optional parts that cannot load on this torch."""
    if "dgl" in sys.modules and not isinstance(sys.modules["dgl"], types.ModuleType):
        raise ImportError("sys.modules['dgl'] is not a module")
    os.environ.setdefault("DGLBACKEND", "pytorch")  # else DGL prints a warning and guesses
    for name in _STUBBED:
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__doc__ = "Empty stand-in: graphbolt has no build for this torch (see rq_kg_pipeline.kg.dgl_import)."
            sys.modules[name] = stub
    try:
        return importlib.import_module("dgl")
    except Exception as exc:  # report what failed and why, whatever DGL raised
        raise ImportError(
            f"DGL could not be imported even with {', '.join(_STUBBED)} stubbed "
            f"(torch {torch.__version__}): {exc}. Install dgl==2.1.0, or use backend 'native'."
        ) from exc


def to_dgl(graph: KGGraph) -> Any:
    """``dgl.DGLGraph`` with edata ``rel`` ([E] int64) and ``norm`` ([E] float32), same edge order."""
    dgl = import_dgl()
    g = dgl.graph((graph.src, graph.dst), num_nodes=graph.num_entities)
    g.edata["rel"] = graph.rel
    g.edata["norm"] = graph.norm
    return g


def from_dgl(g: Any, num_relations: int) -> KGGraph:
    """Inverse of :func:`to_dgl`."""
    src, dst = g.edges(order="eid")
    return KGGraph(src.long(), dst.long(), g.edata["rel"].long(), g.edata["norm"].float(), g.num_nodes(), num_relations)
