"""Data-parallel training over torch.distributed: the process group, and a launcher that starts
N workers with torchrun's own engine (torch.distributed.elastic) from inside a Python process.

Scheme (see docs/scaling.md): every process runs the full-graph encoder, the tokenisation and
the quantizer of the batch's distinct heads (alike on all of them: same data, same seed, same
random stream; rank 0's codebooks and buffers are broadcast after each step), and ConvE's 1-N
scoring on its shard of the batch's queries; DDP averages the gradients. The loss is scaled so
that the averaged gradient is the one of a single process on the whole batch, so N processes
train the same model as one.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)


class DistributedTrainingError(RuntimeError):
    """A training worker failed; the message carries its error."""


@dataclass(frozen=True)
class DataParallel:
    """This process's place in an initialised process group of ``world_size`` > 1 processes."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def current(cls) -> DataParallel | None:
        """The running process group, or None for a single process (none, or of size 1)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return None
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place, not differentiable; on CUDA the host does not wait."""
        dist.all_reduce(tensor)
        return tensor

    def sync_from_main(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite ``tensors`` on every process with rank 0's values: one broadcast per dtype."""
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        for group in by_dtype.values():
            views = [t.detach().view(torch.uint8) if t.dtype == torch.bool else t.detach() for t in group]
            flat = torch.cat([v.reshape(-1) for v in views])
            dist.broadcast(flat, src=0)
            for view, piece in zip(views, flat.split([v.numel() for v in views])):
                view.copy_(piece.view_as(view))

    def flag_from_main(self, value: bool, device: torch.device) -> bool:
        """``value`` as rank 0 has it, on every process (e.g. rank 0's early-stop decision)."""
        flag = torch.tensor([int(value)], device=device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())


def wrap_ddp(model: torch.nn.Module) -> DistributedDataParallel:
    """DDP over ``model``, without DDP's buffer broadcast before each forward (the loop syncs
    buffers after each step instead): ``forward_sync_buffers`` in recent PyTorch, ``broadcast_buffers`` before."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return DistributedDataParallel(model, forward_sync_buffers=False)
    return DistributedDataParallel(model, broadcast_buffers=False)


def init_from_env(device_type: str) -> DataParallel | None:
    """Join the process group torchrun (or :func:`launch`) describes in the environment: NCCL
    for CUDA, gloo for CPU; the process's GPU is ``LOCAL_RANK``. None when run alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return None
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DataParallel.current()


@record  # a failing worker's error reaches the launcher (ChildFailedError) with its message
def _worker(device_type: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One worker of :func:`launch`: join the group, run ``fn(*args, **kwargs)``, leave. CPU
    workers share the cores (unless OMP_NUM_THREADS says otherwise). Tensors arrive in memory
    shared by all workers, so each works on its own copy (a model trained in place would
    otherwise take every worker's optimiser steps)."""
    rank = int(os.environ["RANK"])
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    if device_type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
    args, kwargs = copy.deepcopy((args, kwargs))
    init_from_env(device_type)
    try:
        return fn(*args, **kwargs)
    finally:
        dist.destroy_process_group()


def launch(nproc: int, device_type: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in ``nproc`` processes of one process group on this host (what
    ``torchrun --standalone --nproc_per_node=nproc`` does) and return rank 0's result.
    ``fn`` and the arguments must be picklable (workers are spawned) and each worker gets its
    own copy: a model passed in is not changed here. A worker's failure stops the others and
    raises :class:`DistributedTrainingError` with its message."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 2:
        raise ValueError(f"launch needs nproc >= 2, got {nproc}; call fn directly for one process")
    if device_type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"{nproc} processes need {nproc} GPUs, this machine has {torch.cuda.device_count()}")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free port on this host
        max_restarts=0,
        logs_specs=DefaultLogsSpecs(),
    )
    elastic_log = logging.getLogger("torch.distributed.elastic")
    level = elastic_log.level
    elastic_log.setLevel(logging.WARNING)  # the agent's INFO lines say nothing a user needs
    try:
        results = elastic_launch(config, _worker)(device_type, fn, args, kwargs)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        message = failure.message["message"] if isinstance(failure.message, dict) else failure.message
        raise DistributedTrainingError(f"training worker rank {rank} failed: {message}") from None
    finally:
        elastic_log.setLevel(level)
    return results[0]
