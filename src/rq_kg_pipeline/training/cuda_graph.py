"""The CUDA training step recorded once as a CUDA graph and replayed: one launch per step, not ~1,000.

A step of the FB15k-237 recipe is ~1,000 small kernels, and the host takes longer to launch
them than the GPU takes to run them. A CUDA graph records the whole step once (forward, losses,
backward, clipping and Adam's update, which must be ``capturable``) and replays it with each
next batch copied into the recorded input tensors. A graph needs fixed shapes and no host reads:

- batches come with their distinct heads padded to a fixed length (``QueryBatch.valid_heads``;
  padding counts in nothing, see :meth:`RQGCN.forward`), so every full batch has one shape;
- the first steps run eagerly on a side stream (PyTorch's recipe for capture: lazy
  initialisation, cuDNN's autotuning and the quantizer's k-means initialisation happen there);
- a batch of another shape (an epoch's last) runs eagerly, without its padding, and without
  ``torch.compile`` (each new shape would be a recompilation, ~10 s, and after 8 Dynamo gives up).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from rq_kg_pipeline.training.queries import QueryBatch

StepFn = Callable[[QueryBatch], tuple[Tensor, ...]]
"""One whole training step of a batch (optimizer update included) -> its detached statistics."""

_INPUTS = ("heads", "rels", "labels", "unique_heads", "head_index", "valid_heads")


def unpadded(batch: QueryBatch) -> QueryBatch:
    """The batch with the padding of its distinct heads removed (no host sync: U is known)."""
    if batch.valid_heads is None:
        return batch
    return dataclasses.replace(batch, unique_heads=batch.unique_heads[: batch.num_unique], valid_heads=None)


class GraphedStep:
    """Runs ``step`` eagerly for ``warmup`` padded batches, then records it as a CUDA graph on the
    next one and replays that graph for every batch of the same shape.

    ``min_unique`` is the fewest distinct heads a batch may have to be replayed (dead-code
    revival draws K distinct latents of a batch; fewer run eagerly, where it samples instead).
    The returned statistics are copies: a replay overwrites the graph's outputs.
    """

    def __init__(self, step: StepFn, optimizer: torch.optim.Optimizer, *, warmup: int = 3, min_unique: int = 1) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (capture needs an eager step first), got {warmup}")
        for group in optimizer.param_groups:
            if not group.get("capturable", False):
                raise ValueError("the optimizer must be built with capturable=True to be recorded in a CUDA graph")
        self._step = step
        self._optimizer = optimizer
        self._warmup_left = warmup
        self._min_unique = min_unique
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: QueryBatch | None = None  # the recorded batch, whose tensors the graph reads
        self._outputs: tuple[Tensor, ...] = ()
        self.replays = 0  # steps run by replaying the graph
        self.eager_steps = 0  # steps run eagerly (warm-up and odd batches)

    def _fits(self, batch: QueryBatch) -> bool:
        if batch.valid_heads is None or batch.num_unique < self._min_unique:
            return False
        recorded = self._inputs
        return recorded is None or all(getattr(batch, n).shape == getattr(recorded, n).shape for n in _INPUTS)

    def __call__(self, batch: QueryBatch) -> tuple[Tensor, ...]:
        if not self._fits(batch):
            self.eager_steps += 1
            with torch.compiler.set_stance("force_eager"):  # compiled modules would recompile for its shape
                return self._step(unpadded(batch))
        if self._warmup_left > 0:
            self._warmup_left -= 1
            self.eager_steps += 1
            main, side = torch.cuda.current_stream(), torch.cuda.Stream()
            side.wait_stream(main)
            with torch.cuda.stream(side):
                out = self._step(batch)
            main.wait_stream(side)
            return out
        if self._graph is None:
            self._record(batch)
        else:
            assert self._inputs is not None
            for name in _INPUTS:
                getattr(self._inputs, name).copy_(getattr(batch, name), non_blocking=True)
        self._graph.replay()
        self.replays += 1
        return tuple(t.clone() for t in self._outputs)

    def _record(self, batch: QueryBatch) -> None:
        """Record the step on ``batch``, whose tensors become the graph's inputs (recording runs nothing)."""
        self._inputs = batch
        self._optimizer.zero_grad(set_to_none=True)  # gradients are then allocated in the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._outputs = self._step(batch)
        self._graph = graph
