"""The RQ-GCN training loop: 1-N BCE + quantizer + reconstruction (+ semantic) losses, codes-only
validation, early stopping, and resumable checkpoints (plain PyTorch; metrics leave through a callback).

Resuming restores weights, optimiser, every RNG and the bookkeeping, so a run interrupted after
a checkpoint and resumed gives the same weights as one that never stopped (on CPU, fixed seed).
Inside an initialised process group (torchrun, or :func:`rq_kg_pipeline.training.distributed.launch`)
the same loop trains data-parallel (see that module); rank 0 alone validates, writes checkpoints
and calls back, and a checkpoint resumes under any number of processes.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import random
import resource
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from rq_kg_pipeline.evaluation.conve_shared import shared_part_score_fn
from rq_kg_pipeline.evaluation.link_prediction import codes_only_score_fn, model_device
from rq_kg_pipeline.evaluation.ranking import FilterIndex, filtered_ranks, rank_metrics
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.models.sharding import BatchShard
from rq_kg_pipeline.semantics.loss import TextTargets, semantic_loss
from rq_kg_pipeline.training.checkpoint import (
    BEST_NAME,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    write_verified,
)
from rq_kg_pipeline.training.config import TrainConfig
from rq_kg_pipeline.training.cuda_graph import GraphedStep
from rq_kg_pipeline.training.distributed import DataParallel, wrap_ddp
from rq_kg_pipeline.training.losses import compiled_structure_loss, structure_loss
from rq_kg_pipeline.training.queries import QueryBatch, TrainQueries

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
LOSS_TERMS = ("structure_loss", "quant_loss", "recon_loss", "semantic_loss")
EpochCallback = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(FloatingPointError):
    """A loss term or the gradient norm became NaN or infinite during training."""


@dataclass
class FitResult:
    """Outcome of :func:`fit`. ``history`` has one metrics dict per completed epoch (epoch 1 first)."""

    best_state_dict: dict[str, torch.Tensor]  # CPU tensors of the best-valid-MRR epoch
    best_epoch: int
    best_valid_mrr: float
    history: list[dict[str, float]]
    resumed_from_epoch: int | None
    train_seconds: float  # over all runs that built this result, resumed ones included
    last_epoch: int = 0
    stopped_early: bool = False


@dataclass
class _Progress:
    """Bookkeeping that a checkpoint must carry besides weights, optimiser and RNGs."""

    epoch: int = 0  # completed epochs
    global_step: int = 0
    best_valid_mrr: float = -math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _seed_everything(seed: int) -> torch.Generator:
    """Seed torch (CPU and CUDA), Python and NumPy; return the CPU generator of batch order."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def _valid_metrics(
    model: torch.nn.Module,
    graph: KGGraph,
    triples: torch.Tensor,
    filter_index: FilterIndex,
    batch_size: int,
) -> dict[str, float]:
    """Filtered ranking where queries and candidates are decoded from the entities' codes only.
    On CPU ConvE's entity-only and relation-only parts are computed once (the same scores up to
    float rounding; FB15k-237 on 2 cores: 1.7 s of scoring and ranking instead of 3.4 s) and every
    batch's scores go into one buffer (2.25 -> 2.0 s with the tables; docs/benchmarks.md)."""
    was_training = model.training
    try:
        codes, relations = model.codes_and_relations(graph, batch_size)  # [M, L, Q], [2R, D]: one encode
        if model_device(model).type == "cpu":  # filtered_ranks reads each batch's scores before the next
            score_fn = shared_part_score_fn(model, graph, codes, relations=relations, reuse_output=True)
        else:
            score_fn = codes_only_score_fn(model, graph, codes, relations=relations)
        ranks = filtered_ranks(score_fn, triples, filter_index, graph.num_relations, batch_size)
    finally:
        model.train(was_training)
    return {f"valid_{k}": v for k, v in rank_metrics(ranks).items()}


def _raise_non_finite(step_stats: torch.Tensor, epoch: int, first_global_step: int) -> None:
    """Raise naming the first step of the epoch whose loss terms or gradient norm are not finite.

    step_stats [S, 5]: (structure, quant, recon, semantic, grad_norm) of the epoch's steps so far.
    """
    bad = (~torch.isfinite(step_stats)).any(dim=1).nonzero()
    if bad.numel() == 0:
        return
    step = int(bad[0])
    names = (*LOSS_TERMS, "grad_norm")
    values = step_stats[step].tolist()
    term = next(n for n, v in zip(names, values) if not math.isfinite(v))
    listed = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, values))
    raise NonFiniteLossError(
        f"non-finite {term} at epoch {epoch}, step {step + 1} (global step {first_global_step + step}): {listed}"
    )


@contextmanager
def cudnn_autotune(device: torch.device) -> Iterator[None]:
    """On CUDA, let cuDNN time its algorithms for each new shape (ConvE's convolution with one
    input channel is 3x faster with the tuned choice); restored on exit."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


@contextmanager
def compiled_for_training(model: torch.nn.Module, enabled: bool) -> Iterator[bool]:
    """With ``enabled``, ConvE and the sequence encoder run compiled by ``torch.compile`` (one
    static shape each: CUDA-graph batches are padded) until exit, then eagerly again, so that
    validation (run under ``torch.compiler.set_stance("force_eager")``) and whatever uses the model
    afterwards run the plain kernels. Without Triton (no compiler for CUDA) training stays eager.
    Yields whether compilation is on (the step's structure loss then compiles too)."""
    modules = [model.scorer, model.sequence_encoder] if enabled else []
    # Triton itself, not triton_support.available(): benchmarks' --no-triton turns off our kernels only
    if modules and importlib.util.find_spec("triton") is None:
        log.warning("torch_compile needs Triton, which is not installed; training without compilation")
        modules = []
    for module in modules:
        module.compile(dynamic=False)
    try:
        yield bool(modules)
    finally:
        for module in modules:  # nn.Module.compile's only state: drop it to run eagerly again
            module._compiled_call_impl = None


def _peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak process RSS (CPU) so far, GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def train_step(
    model: torch.nn.Module,
    graph: KGGraph,
    batch: QueryBatch,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    autocast: Callable[[], Any] = nullcontext,
    text: TextTargets | None = None,
    parallel: DataParallel | None = None,
    structure_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = structure_loss,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, losses, backward and clipping of one batch; the caller checks and calls
    ``optimizer.step()``. -> (structure, quant, recon, semantic, grad norm) [5], per-level stats
    [3, Q], detached and left on the device (reading them would stall a CUDA host).

    The semantic term (``text`` on the model's device, ``config.semantic_weight`` > 0) compares the
    model's semantic head on the decoded vectors of the batch's distinct heads with their text
    embeddings; otherwise it is not computed at all (reported as 0), so the step is the one without it.

    Data-parallel (``parallel``, ``model`` wrapped in DDP, ``batch`` this process's shard): each
    process's structure loss is its share of the whole batch's mean (rows / total), times N
    because DDP averages gradients; the other terms are the same on every process. The averaged
    gradient is then the single-process one. The returned structure loss is this process's share
    (summed over the processes once per epoch by :func:`fit`); grad norm and the rest are global.
    """
    use_text = text is not None and config.semantic_weight > 0
    core = model.module if isinstance(model, DistributedDataParallel) else model
    rows = batch.heads.shape[0]
    shard = BatchShard(batch.start, batch.start + rows, batch.total) if parallel is not None else None
    with autocast():
        out = model(graph, batch.heads, batch.rels, batch.unique_heads, batch.head_index, shard, batch.valid_heads)
        predicted = core.semantic_projection(out.decoded) if use_text else None  # [U, E]
    structure = structure_fn(out.logits, batch.labels)
    if shard is not None:
        structure = structure * (rows / batch.total)  # this process's share of the batch mean
    quant = out.quant.loss.float()
    recon = out.recon_loss.float()
    loss = (parallel.world_size if parallel is not None else 1) * structure + quant + config.recon_weight * recon
    if use_text:
        heads = batch.unique_heads  # [U]
        counted = text.mask.index_select(0, heads)  # [U]
        if batch.valid_heads is not None:
            counted = counted & batch.valid_heads
        semantic = semantic_loss(predicted, text.embeddings.index_select(0, heads), counted)
        loss = loss + config.semantic_weight * semantic
    else:
        semantic = torch.zeros((), device=structure.device)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    else:
        grad_norm = torch.zeros((), device=structure.device)
    stats = torch.stack([structure, quant, recon, semantic, grad_norm.float()]).detach()  # [5]
    levels = torch.stack([out.quant.level_losses, out.quant.utilisation, out.quant.perplexity]).detach().float()  # [3, Q]
    return stats, levels


def padded_heads(config: TrainConfig, graph: KGGraph) -> int:
    """Length P of a CUDA-graph batch's padded distinct heads: no batch has more."""
    return min(config.batch_size, graph.num_entities)


def graphed_train_step(
    model: torch.nn.Module,
    graph: KGGraph,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    autocast: Callable[[], Any] = nullcontext,
    text: TextTargets | None = None,
    structure_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = structure_loss,
) -> GraphedStep:
    """:func:`train_step` + ``optimizer.step()`` of an RQGCN as a :class:`GraphedStep` (batches
    from ``TrainQueries.batches(..., pad_heads=padded_heads(config, graph))``, a capturable
    optimizer). A replayed batch needs K distinct latents (L per head) for dead-code revival."""

    def one_step(batch: QueryBatch) -> tuple[torch.Tensor, ...]:
        stats, levels = train_step(model, graph, batch, optimizer, config, autocast, text, structure_fn=structure_fn)
        optimizer.step()
        return stats, levels

    quantizer = model.quantizer
    min_unique = -(-quantizer.num_codes // model.seq_len) if quantizer.revive_dead_codes else 1
    return GraphedStep(one_step, optimizer, min_unique=min_unique)


def _payload(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: _Progress,
    config: TrainConfig,
    model_config: Mapping[str, Any] | None,
    device: torch.device,
) -> dict[str, Any]:
    return {
        "format_version": CHECKPOINT_FORMAT,
        "epoch": state.epoch,
        "global_step": state.global_step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": capture_rng_state(generator, device),
        "best_valid_mrr": state.best_valid_mrr,
        "best_epoch": state.best_epoch,
        "best_model": state.best_state,
        "bad_evals": state.bad_evals,
        "stopped_early": state.stopped_early,
        "history": state.history,
        "train_seconds": state.train_seconds,
        "train_config": config.to_dict(),
        "model_config": dict(model_config) if model_config is not None else {},
    }


def _restore(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: TrainConfig,
    model_config: Mapping[str, Any] | None,
    device: torch.device,
) -> _Progress:
    payload = load_checkpoint(path, map_location="cpu")
    if payload.get("format_version") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} has format {payload.get('format_version')}, expected {CHECKPOINT_FORMAT}")
    stored_model_config = payload["model_config"]
    if model_config is not None and stored_model_config and dict(model_config) != stored_model_config:
        raise ValueError(
            f"checkpoint {path} was trained with model_config {stored_model_config}, "
            f"not {dict(model_config)}; use another checkpoint_dir to start a new run"
        )
    changed = {
        k: (v, getattr(config, k))
        for k, v in payload["train_config"].items()
        if hasattr(config, k) and getattr(config, k) != v
    }
    if changed:
        log.warning("resuming %s with changed training settings (stored, now): %s", path, changed)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    restore_rng_state(payload["rng"], generator, device)
    return _Progress(
        epoch=int(payload["epoch"]),
        global_step=int(payload["global_step"]),
        best_valid_mrr=float(payload["best_valid_mrr"]),
        best_epoch=int(payload["best_epoch"]),
        best_state=dict(payload["best_model"]),
        bad_evals=int(payload["bad_evals"]),
        stopped_early=bool(payload["stopped_early"]),
        history=list(payload["history"]),
        train_seconds=float(payload["train_seconds"]),
    )


def _state_outside_optimizer(model: torch.nn.Module) -> list[torch.Tensor]:
    """What a training step changes besides the optimiser's update: buffers (batch-norm statistics,
    code usage) and the codebooks (k-means initialisation, dead-code revival). Data-parallel
    processes compute these alike, but on CUDA not bit for bit, and a revival decided on a code
    that is dead on one process only would let the replicas drift apart: rank 0's are kept."""
    tensors = list(model.buffers())
    quantizer = getattr(model, "quantizer", None)
    if quantizer is not None:
        tensors.append(quantizer.codebooks)
    return tensors


def _check_text(model: torch.nn.Module, graph: KGGraph, text: TextTargets | None, config: TrainConfig) -> None:
    """semantic_weight > 0 needs text targets for every entity and a model whose head fits them."""
    if config.semantic_weight <= 0:
        return
    if text is None:
        raise ValueError("semantic_weight > 0 needs text embeddings (text=...); set semantic_weight to 0 to train without them")
    if text.num_entities != graph.num_entities:
        raise ValueError(f"text embeddings cover {text.num_entities} entities, the graph {graph.num_entities}")
    head_dim = getattr(model, "semantic_dim", 0)
    if head_dim != text.dim:
        raise ValueError(f"semantic_weight > 0 needs a model with semantic_dim = {text.dim} (the text embedding size), got {head_dim}")


def _check_inputs(graph: KGGraph, train_ids: torch.Tensor, valid_ids: torch.Tensor, filter_index: FilterIndex) -> None:
    if (filter_index.num_entities, filter_index.num_relations) != (graph.num_entities, graph.num_relations):
        raise ValueError(
            f"filter_index covers {filter_index.num_entities} entities / {filter_index.num_relations} relations, "
            f"the graph {graph.num_entities} / {graph.num_relations}"
        )
    for name, ids in (("train_ids", train_ids), ("valid_ids", valid_ids)):
        if ids.ndim != 2 or ids.shape[1] != 3 or ids.numel() == 0:
            raise ValueError(f"{name} must be non-empty id triples of shape [N, 3], got {tuple(ids.shape)}")


def fit(
    model: torch.nn.Module,
    graph: KGGraph,
    train_ids: torch.Tensor,
    valid_ids: torch.Tensor,
    filter_index: FilterIndex,
    config: TrainConfig,
    *,
    checkpoint_dir: Path | None,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
    model_config: Mapping[str, Any] | None = None,
    text: TextTargets | None = None,
) -> FitResult:
    """Train ``model`` (an RQGCN) on ``train_ids`` [N, 3], validating filtered MRR from codes.

    With ``config.semantic_weight`` > 0, ``text`` (embeddings of all entities) drives the semantic
    term and its per-epoch mean is ``semantic_loss`` in the history; with 0, ``text`` is ignored.

    With ``checkpoint_dir``, a valid checkpoint found there is resumed (or, if that run already
    finished, its result returned at once); ``model_config`` is stored with it and must match
    on resume. After return the model holds the last epoch's weights; the best are in the result.
    """
    _check_inputs(graph, train_ids, valid_ids, filter_index)
    _check_text(model, graph, text, config)
    parallel = DataParallel.current()
    main = parallel is None or parallel.is_main  # validates, checkpoints, calls back
    device = config.resolve_device()
    if parallel is not None and device.type == "cuda":
        device = torch.device("cuda", parallel.local_rank)
    use_bf16 = config.bf16 and device.type == "cuda"
    if config.bf16 and not use_bf16:
        log.info("bf16 autocast is CUDA-only; training in float32 on %s", device)
    generator = _seed_everything(config.seed)
    model.to(device)
    graph = graph.to(device)
    valid_ids = valid_ids.to(device)
    text = text.to(device) if text is not None and config.semantic_weight > 0 else None
    queries = TrainQueries.build(train_ids, graph.num_entities, graph.num_relations)  # CPU: batches are built there
    # One CUDA-graph replay per step (training/cuda_graph.py); not with DDP, whose collectives
    # the graph would have to record too.
    use_graphs = config.cuda_graphs and device.type == "cuda" and parallel is None
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
        capturable=use_graphs,
    )
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    state = _Progress()
    resumed_from: int | None = None
    if checkpoint_dir is not None:
        found = latest_checkpoint(checkpoint_dir)
        if found is not None:
            state = _restore(found, model, optimizer, generator, config, model_config, device)
            for group in optimizer.param_groups:  # the stored flag is the saving run's
                group["capturable"] = use_graphs
            resumed_from = state.epoch
            log.info("resumed from %s (epoch %d)", found, state.epoch)

    def result() -> FitResult:
        return FitResult(
            best_state_dict=state.best_state,
            best_epoch=state.best_epoch,
            best_valid_mrr=state.best_valid_mrr,
            history=state.history,
            resumed_from_epoch=resumed_from,
            train_seconds=state.train_seconds,
            last_epoch=state.epoch,
            stopped_early=state.stopped_early,
        )

    if state.stopped_early or state.epoch >= config.epochs:
        log.info("checkpoint in %s already finished (epoch %d); nothing to train", checkpoint_dir, state.epoch)
        return result()

    autocast = (  # no cast cache: a CUDA graph must not keep casts of another step
        (lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False)) if use_bf16 else nullcontext
    )
    # A CPU step pays nothing to look at its losses; on CUDA that would stall the host every step,
    # so the epoch's steps are checked together at its end (the epoch's checkpoint comes after).
    # Data-parallel processes agree: a non-finite loss anywhere makes the all-reduced gradient
    # norm non-finite everywhere (and a process that stops alone takes the launcher down).
    check_each_step = device.type != "cuda"
    # Every process holds the same weights (restored from one checkpoint or seeded alike); DDP
    # all-reduces the gradients. Buffers (batch-norm statistics) move alike on every process.
    trained = wrap_ddp(model) if parallel is not None else model
    replicated = _state_outside_optimizer(model) if parallel is not None else []
    rank, world_size = (parallel.rank, parallel.world_size) if parallel is not None else (0, 1)

    pad_heads = padded_heads(config, graph) if use_graphs else 0
    bar = tqdm(
        total=config.epochs, initial=state.epoch, disable=None if progress and main else True, desc="training", unit="epoch"
    )
    use_compile = config.torch_compile and device.type == "cuda" and parallel is None
    last_checkpoint = time.perf_counter()  # checkpoint_min_seconds counts from here, then from each write
    best_on_disk = state.best_epoch  # the epoch of the weights in BEST_NAME (a resumed run wrote them before)
    with cudnn_autotune(device), compiled_for_training(model, use_compile) as compiled, bar:
        structure_fn = compiled_structure_loss() if compiled else structure_loss
        graphed = graphed_train_step(model, graph, optimizer, config, autocast, text, structure_fn) if use_graphs else None
        for epoch in range(state.epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            model.train()
            step_stats: list[torch.Tensor] = []  # per step [5]: loss terms and grad norm
            level_sum: torch.Tensor | None = None  # [3, Q]: loss, utilisation, perplexity
            first_global_step = state.global_step + 1
            batches = queries.batches(
                config.batch_size,
                generator,
                config.label_smoothing,
                device=device,
                rank=rank,
                world_size=world_size,
                pad_heads=pad_heads,
            )
            for batch in batches:
                state.global_step += 1
                if graphed is not None:  # replayed or eager, optimizer update included
                    stats, levels = graphed(batch)
                else:
                    stats, levels = train_step(trained, graph, batch, optimizer, config, autocast, text, parallel, structure_fn)
                    if check_each_step and not bool(torch.isfinite(stats).all()):
                        _raise_non_finite(torch.stack([*step_stats, stats]), epoch, first_global_step)
                    optimizer.step()
                    if parallel is not None:
                        parallel.sync_from_main(replicated)
                step_stats.append(stats)
                level_sum = levels if level_sum is None else level_sum + levels

            stats = torch.stack(step_stats)  # [S, 5]; on CUDA the one host sync of the epoch
            if parallel is not None:  # the structure-loss shares of all processes, in one collective
                stats[:, 0] = parallel.sum_(stats[:, 0].contiguous())
            _raise_non_finite(stats, epoch, first_global_step)
            steps = stats.shape[0]
            term_sum, grad_sum = stats[:, :4].sum(dim=0), stats[:, 4].sum()
            means = (term_sum / steps).tolist()
            metrics: dict[str, float] = {"epoch": float(epoch)}
            metrics["loss"] = means[0] + means[1] + config.recon_weight * means[2]
            metrics.update(zip(LOSS_TERMS[:3], means[:3]))
            if text is not None:  # only a run with the semantic term reports it
                metrics["loss"] += config.semantic_weight * means[3]
                metrics["semantic_loss"] = means[3]
            assert level_sum is not None  # at least one batch: train_ids is non-empty
            for name, row in zip(("quant_loss", "utilisation", "perplexity"), (level_sum / steps).tolist()):
                metrics.update({f"{name}_l{q}": v for q, v in enumerate(row, start=1)})
            if config.grad_clip:
                metrics["grad_norm"] = float(grad_sum / steps)
            metrics["epoch_seconds"] = time.perf_counter() - started
            metrics["steps_per_second"] = steps / metrics["epoch_seconds"]
            metrics["peak_memory_gib"] = _peak_memory_gib(device)
            state.train_seconds += metrics["epoch_seconds"]
            state.epoch = epoch

            written = 0.0  # seconds spent writing checkpoints after this epoch
            if (epoch % config.eval_every == 0 or epoch == config.epochs) and main:
                eval_started = time.perf_counter()
                with torch.compiler.set_stance("force_eager"):
                    metrics.update(_valid_metrics(model, graph, valid_ids, filter_index, config.eval_batch_size))
                metrics["eval_seconds"] = time.perf_counter() - eval_started
                if metrics["valid_mrr"] > state.best_valid_mrr:
                    state.best_valid_mrr, state.best_epoch, state.bad_evals = metrics["valid_mrr"], epoch, 0
                    state.best_state = _cpu_state(model)
                else:
                    state.bad_evals += 1
                    state.stopped_early = config.patience > 0 and state.bad_evals >= config.patience
            if parallel is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
                state.stopped_early = parallel.flag_from_main(state.stopped_early, device)
            state.history.append(metrics)

            due = config.checkpoint_every > 0 and epoch % config.checkpoint_every == 0
            due = due and time.perf_counter() - last_checkpoint >= config.checkpoint_min_seconds
            if main and checkpoint_dir is not None and (due or epoch == config.epochs or state.stopped_early):
                write_started = time.perf_counter()
                if state.best_epoch != best_on_disk:  # the best weights so far, before the checkpoint that holds them
                    write_verified(
                        checkpoint_dir / BEST_NAME,
                        {
                            "model": state.best_state,
                            "epoch": state.best_epoch,
                            "valid_mrr": state.best_valid_mrr,
                            "model_config": dict(model_config) if model_config is not None else {},
                        },
                    )
                    best_on_disk = state.best_epoch
                save_checkpoint(
                    checkpoint_dir, _payload(model, optimizer, generator, state, config, model_config, device), epoch
                )
                last_checkpoint = time.perf_counter()
                written += last_checkpoint - write_started
            bar.update(1)
            bar.set_postfix(
                loss=f"{metrics['loss']:.4f}", best_mrr=f"{state.best_valid_mrr:.4f}" if state.best_epoch else "-"
            )
            if on_epoch_end is not None and main:  # with the epoch's checkpoint writing time, which history can't hold
                on_epoch_end(epoch, {**metrics, "checkpoint_seconds": written} if written else metrics)
            if state.stopped_early:
                if main:
                    log.info(
                        "early stop at epoch %d: no valid MRR gain in %d evaluations (best %.4f at epoch %d)",
                        epoch,
                        state.bad_evals,
                        state.best_valid_mrr,
                        state.best_epoch,
                    )
                break
    return result()
