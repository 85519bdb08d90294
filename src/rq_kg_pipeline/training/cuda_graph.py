"""The CUDA training step recorded once as a CUDA graph and replayed: one launch per step, not ~1,000.

A step of the FB15k-237 recipe is ~1,000 small kernels, and the host takes longer to launch
them than the GPU takes to run them. A CUDA graph records the whole step once (forward, losses,
backward, clipping and Adam's update, which must be ``capturable``) and replays it with each
next batch copied into the recorded input tensors. A graph needs fixed shapes and no host reads:

- batches come with their distinct heads padded to a fixed length (``QueryBatch.valid_heads``;
  padding counts in nothing, see :meth:`RQGCN.forward`), so every full batch has one shape;
- the first steps run eagerly on a side stream (PyTorch's recipe for capture: lazy
  initialisation, cuDNN's autotuning and the quantizer's k-means initialisation happen there);
- a batch of another shape (an epoch's last, the same shape every epoch) gets a graph of its own,
  recorded after one eager warm-up, without ``torch.compile`` (a new shape would be a
  recompilation, ~10 s, and after 8 Dynamo gives up); an eager step of a full batch took 21 ms on an H100;
- a batch with too few distinct heads to record runs eagerly, without its padding, uncompiled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import NamedTuple

import torch
from torch import Tensor

from rq_kg_pipeline.training.queries import QueryBatch

StepFn = Callable[[QueryBatch], tuple[Tensor, ...]]
"""One whole training step of a batch (optimizer update included) -> its detached statistics."""

_INPUTS = ("heads", "rels", "labels", "unique_heads", "head_index", "valid_heads")


class _Recording(NamedTuple):
    """One recorded step: the graph, the batch whose tensors it reads, and its outputs."""

    graph: torch.cuda.CUDAGraph
    inputs: QueryBatch
    outputs: tuple[Tensor, ...]


def _shape(batch: QueryBatch) -> tuple[torch.Size, ...]:
    return tuple(getattr(batch, name).shape for name in _INPUTS)


def unpadded(batch: QueryBatch) -> QueryBatch:
    """The batch with the padding of its distinct heads removed (no host sync: U is known)."""
    if batch.valid_heads is None:
        return batch
    return dataclasses.replace(batch, unique_heads=batch.unique_heads[: batch.num_unique], valid_heads=None)


class GraphedStep:
    """Runs ``step`` eagerly for ``warmup`` padded batches, then records it as a CUDA graph on the
    next one and replays that graph for every batch of the same shape; a batch of another shape is
    run eagerly once and recorded, uncompiled, on its next appearance.

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
        self._warmup = warmup
        self._min_unique = min_unique
        self._recordings: dict[tuple[torch.Size, ...], _Recording] = {}
        self._warmups_done: dict[tuple[torch.Size, ...], int] = {}
        self._compiled_shape: tuple[torch.Size, ...] | None = None  # the first shape: its step runs compiled
        self.replays = 0  # steps run by replaying a graph
        self.eager_steps = 0  # steps run eagerly (warm-ups and batches that cannot be recorded)

    def __call__(self, batch: QueryBatch) -> tuple[Tensor, ...]:
        if batch.valid_heads is None or batch.num_unique < self._min_unique:
            self.eager_steps += 1
            with torch.compiler.set_stance("force_eager"):  # compiled modules would recompile for its shape
                return self._step(unpadded(batch))
        shape = _shape(batch)
        if self._compiled_shape is None:
            self._compiled_shape = shape
        recording = self._recordings.get(shape)
        if recording is None:
            done = self._warmups_done.get(shape, 0)
            if done < (self._warmup if shape == self._compiled_shape else 1):
                self._warmups_done[shape] = done + 1
                self.eager_steps += 1
                with self._stance(shape):
                    return self._warm_up(batch)
            with self._stance(shape):
                recording = self._recordings[shape] = self._record(batch)
        else:
            for name in _INPUTS:
                getattr(recording.inputs, name).copy_(getattr(batch, name), non_blocking=True)
        recording.graph.replay()
        self.replays += 1
        return tuple(t.clone() for t in recording.outputs)

    def _stance(self, shape: tuple[torch.Size, ...]) -> AbstractContextManager:
        """Compiled modules run compiled for the first shape only. Built only to be entered at once:
        ``set_stance(...)`` switches the stance as soon as it is made, and only its exit restores it."""
        return nullcontext() if shape == self._compiled_shape else torch.compiler.set_stance("force_eager")

    def _warm_up(self, batch: QueryBatch) -> tuple[Tensor, ...]:
        """An eager step on a side stream, as PyTorch's recipe for capture asks."""
        main, side = torch.cuda.current_stream(), torch.cuda.Stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            out = self._step(batch)
        main.wait_stream(side)
        return out

    def _record(self, batch: QueryBatch) -> _Recording:
        """Record the step on ``batch``, whose tensors become the graph's inputs (recording runs nothing)."""
        self._optimizer.zero_grad(set_to_none=True)  # gradients are then allocated in the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self._step(batch)
        return _Recording(graph, batch, outputs)
