"""Filtered link-prediction ranking over all entities, in both directions, batched and vectorised.

A query is (entity, relation) with relation in [0, 2R): (h, r, ?) asks for tails and
(t, r + R, ?) asks for heads. The filtered setting ranks the true target only against entities
that are not other known answers of the same query (over train + valid + test). Ties are
scored with the *realistic* rank, the mean of the optimistic rank (1 + #better) and the
pessimistic rank (#better + #equal, the target included), so a constant score function gets
the expected rank of a random order, (n + 1) / 2, not a flattering 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""score_fn(entities [B], relations [B]) -> scores [B, M]; higher means more plausible."""


def _check_triples(triples: torch.Tensor, name: str, num_entities: int, num_relations: int) -> None:
    if triples.ndim != 2 or triples.shape[1] != 3:
        raise ValueError(f"{name} must be id triples of shape [N, 3], got {tuple(triples.shape)}")
    if triples.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must hold integer ids, got dtype {triples.dtype}")
    if triples.numel() == 0:
        return
    ents = triples[:, [0, 2]]
    if int(ents.min()) < 0 or int(ents.max()) >= num_entities:
        raise ValueError(f"{name} has entity ids outside [0, num_entities={num_entities})")
    rels = triples[:, 1]
    if int(rels.min()) < 0 or int(rels.max()) >= num_relations:
        raise ValueError(f"{name} has relation ids outside [0, num_relations={num_relations})")


def both_direction_queries(
    triples: torch.Tensor, num_relations: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries of id triples [N, 3] in both directions: tail queries (h, r) -> t first, then
    head queries (t, r + R) -> h. Returns entity [2N], relation [2N], target [2N] (int64)."""
    h, r, t = triples.long().unbind(dim=1)
    return torch.cat([h, t]), torch.cat([r, r + num_relations]), torch.cat([t, h])


def _expand_ranges(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR gather: for ranges [starts[i], starts[i] + counts[i]) give (row i, position) pairs."""
    rows = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)  # [T]
    first = torch.cumsum(counts, 0) - counts  # [B] where each row's run starts in the output
    positions = torch.arange(rows.numel(), device=counts.device) - first[rows] + starts[rows]  # [T]
    return rows, positions


@dataclass(frozen=True)
class FilterIndex:
    """Known answers of every (entity, relation) query, stored CSR-style.

    Query key = entity * 2R + relation. ``keys`` is sorted and unique; the answers of the
    i-th key are ``targets[offsets[i]:offsets[i + 1]]`` (sorted, without duplicates).
    """

    keys: torch.Tensor  # [K] int64, sorted unique query keys
    offsets: torch.Tensor  # [K + 1] int64
    targets: torch.Tensor  # [T] int64 entity ids
    num_entities: int  # M
    num_relations: int  # R, original relations without inverses

    @classmethod
    def build(
        cls, triple_sets: Sequence[torch.Tensor], num_entities: int, num_relations: int
    ) -> FilterIndex:
        """Index every triple of ``triple_sets`` (each [N, 3]) in both directions."""
        if num_entities <= 0 or num_relations <= 0:
            raise ValueError(
                f"num_entities and num_relations must be positive, got {num_entities}, {num_relations}"
            )
        parts = []
        for i, triples in enumerate(triple_sets):
            _check_triples(triples, f"triple_sets[{i}]", num_entities, num_relations)
            parts.append(triples.long().cpu())
        all_triples = torch.cat(parts) if parts else torch.empty(0, 3, dtype=torch.long)
        ent, rel, target = both_direction_queries(all_triples, num_relations)
        return cls.from_pairs(ent, rel, target, num_entities, num_relations)

    @classmethod
    def from_pairs(
        cls,
        ent: torch.Tensor,
        rel: torch.Tensor,
        target: torch.Tensor,
        num_entities: int,
        num_relations: int,
    ) -> FilterIndex:
        """Group (entity [P], relation [P] in [0, 2R), target [P]) answer pairs by query."""
        qkey = ent.long() * (2 * num_relations) + rel.long()  # [P]
        target = target.long()
        # Lexicographic sort by (query key, target) with two stable sorts: no overflow-prone
        # combined key, and each query's targets come out sorted.
        order = torch.argsort(target, stable=True)
        order = order[torch.argsort(qkey[order], stable=True)]
        qkey, target = qkey[order], target[order]
        distinct = torch.ones_like(qkey, dtype=torch.bool)  # [P] drops repeated (query, target)
        distinct[1:] = (qkey[1:] != qkey[:-1]) | (target[1:] != target[:-1])
        qkey, target = qkey[distinct], target[distinct]
        keys, counts = torch.unique_consecutive(qkey, return_counts=True)  # [K], [K]
        offsets = torch.zeros(keys.numel() + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(counts, 0)
        return cls(keys, offsets, target, num_entities, num_relations)

    @property
    def num_queries(self) -> int:
        return int(self.keys.numel())

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def query_entities(self) -> torch.Tensor:
        """[K] entity of each indexed query."""
        return torch.div(self.keys, 2 * self.num_relations, rounding_mode="floor")

    def query_relations(self) -> torch.Tensor:
        """[K] relation (in [0, 2R)) of each indexed query."""
        return self.keys % (2 * self.num_relations)

    def to(self, device: torch.device | str) -> FilterIndex:
        if self.keys.new_empty(0, device=device).device == self.device:  # "cuda" == "cuda:0" here
            return self
        return FilterIndex(
            self.keys.to(device),
            self.offsets.to(device),
            self.targets.to(device),
            self.num_entities,
            self.num_relations,
        )

    def targets_of(self, query_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Answers of indexed queries ``query_ids`` [B] (positions in ``keys``) as
        (row in the batch [T], entity [T]) pairs."""
        starts = self.offsets[query_ids]  # [B]
        counts = self.offsets[query_ids + 1] - starts  # [B]
        rows, positions = _expand_ranges(starts, counts)
        return rows, self.targets[positions]

    def lookup(self, ent: torch.Tensor, rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Known answers of arbitrary queries (entity [B], relation [B]) as (row [T], entity [T])
        pairs; a query absent from the index has none."""
        qkey = ent.long() * (2 * self.num_relations) + rel.long()  # [B]
        pos = torch.searchsorted(self.keys, qkey)  # [B]
        safe = pos.clamp(max=max(self.num_queries - 1, 0))
        found = (pos < self.num_queries) & (self.keys[safe] == qkey) if self.num_queries else pos < 0
        starts = self.offsets[safe]
        counts = torch.where(found, self.offsets[safe + 1] - starts, torch.zeros_like(starts))
        rows, positions = _expand_ranges(starts, counts)
        return rows, self.targets[positions]

    def mask(self, ent: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """[B, M] bool, True where the entity is a known answer of the query."""
        rows, known = self.lookup(ent, rel)
        out = torch.zeros(ent.numel(), self.num_entities, dtype=torch.bool, device=ent.device)
        out[rows, known] = True
        return out


def _checked_scores(score_fn: ScoreFn, ent: torch.Tensor, rel: torch.Tensor, num_entities: int) -> torch.Tensor:
    scores = score_fn(ent, rel)  # [B, M]
    if scores.shape != (ent.numel(), num_entities):
        raise ValueError(
            f"score_fn must return scores of shape [B, M] = [{ent.numel()}, {num_entities}], "
            f"got {tuple(scores.shape)}"
        )
    # A NaN anywhere makes the sum NaN (one cheap pass); only then (or with +-inf scores) look closer.
    if torch.isnan(scores.sum()) and torch.isnan(scores).any():
        raise ValueError("score_fn returned NaN scores; ranks would be meaningless")
    return scores


# Queries ranked together on CPU: their score copies ([32, M] float32, 1.9 MB on FB15k-237)
# stay in cache between the passes of :func:`_realistic_ranks`.
CPU_RANK_QUERIES = 32


def _filtered_copy(scores: torch.Tensor, known_rows: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Copy of scores [Bq, M] with the known answers (``known_rows`` [T], ``known`` [T]) at -inf."""
    return scores.index_put((known_rows, known), scores.new_tensor(float("-inf")))


def _realistic_ranks(
    scores: torch.Tensor, masked: torch.Tensor, known: tuple[torch.Tensor, torch.Tensor], row: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Filtered realistic ranks [Bt] (float64) of ``target`` [Bt] in score rows ``row`` [Bt] of
    ``scores`` [Bq, M], against ``masked`` (:func:`_filtered_copy`: the ``known`` (query row [T],
    answer [T]) pairs at -inf).

    One pass per rank row: over the M entries of a row, sign(s - s_t) sums to
    S = #better - #worse = 2 #better + #equal - M (filtered entries, at -inf, count as worse;
    #equal holds the target when it was not filtered), so the realistic rank
    #better + (#equal + 1) / 2 is (S + M) / 2 + 1/2, + 1/2 again when the target itself was
    filtered. Sums of +-1 below 2^24 are exact in float32, and s - s_t is 0 only for s == s_t
    (IEEE gradual underflow; torch's default, unless ``torch.set_flush_denormal(True)``). Rows
    whose target score is not finite (s - s_t may be NaN) are counted by comparisons instead.
    """
    num_entities = scores.shape[1]
    target_score = scores[row, target]  # [Bt]
    target_filtered = masked[row, target] != target_score  # [Bt] True where the target was set to -inf
    gathered = masked.index_select(0, row)  # [Bt, M] a copy
    exact = torch.float32 if num_entities < 2**24 else torch.float64  # +-1 summed exactly
    signs = gathered.sub_(target_score.unsqueeze(1)).sign_()  # [Bt, M]
    ranks = (signs.sum(dim=1, dtype=exact).double() + num_entities) / 2.0  # [Bt] #better + #equal / 2
    ranks += 0.5 + 0.5 * target_filtered.double()
    bad = ~torch.isfinite(target_score)
    if bool(bad.any()):
        sel = bad.nonzero().squeeze(1)
        s, t = scores[row[sel]], target_score[sel].unsqueeze(1)  # [S, M], [S, 1]
        filtered = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)  # [Bq, M]
        filtered[known[0], known[1]] = True
        candidate = ~filtered[row[sel]]  # [S, M]
        candidate[torch.arange(sel.numel(), device=s.device), target[sel]] = True
        better = ((s > t) & candidate).sum(dim=1).double()
        equal = ((s == t) & candidate).sum(dim=1).double()
        ranks[sel] = better + (equal + 1.0) / 2.0
    return ranks


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


@torch.no_grad()
def filtered_ranks(
    score_fn: ScoreFn,
    triples: torch.Tensor,
    filter_index: FilterIndex,
    num_relations: int,
    batch_size: int = 1024,
    progress: bool = False,
) -> torch.Tensor:
    """Filtered realistic ranks [2N] (float64, CPU) of id triples [N, 3]: tail prediction for
    every (h, r, ?) first, then head prediction as (t, r + R, ?).

    Each distinct (entity, relation) query is scored once, however many triples share it
    (FB15k-237 valid: 20,112 distinct queries for 35,070 ranks), and its filter row is built
    once; score_fn receives ids on the device of ``triples``; at most ``batch_size`` x M
    scores are held at once (plus the rows of one batch's triples), and each batch's scores are
    done with before score_fn is called again (it may write them all into one buffer).
    ``progress`` shows a bar on a terminal.
    """
    _check_batch_size(batch_size)
    if num_relations != filter_index.num_relations:
        raise ValueError(
            f"num_relations={num_relations} differs from the filter index's {filter_index.num_relations}"
        )
    num_entities = filter_index.num_entities
    _check_triples(triples, "triples", num_entities, num_relations)
    ent, rel, target = both_direction_queries(triples, num_relations)  # [2N] each
    ranks = torch.empty(ent.numel(), dtype=torch.float64)
    if ent.numel() == 0:
        return ranks
    keys, query_of = torch.unique(ent * (2 * num_relations) + rel, return_inverse=True)  # [U], [2N]
    members = torch.argsort(query_of, stable=True)  # [2N] rank positions grouped by query
    bounds = torch.cat([query_of.new_zeros(1), torch.bincount(query_of, minlength=keys.numel()).cumsum(0)]).tolist()
    index = filter_index  # moved to the scores' device once, on the first batch
    batches = range(0, keys.numel(), batch_size)
    for start in tqdm(batches, desc="ranking", unit="batch", leave=False, disable=None if progress else True):
        stop = min(start + batch_size, keys.numel())
        q_ent, q_rel = keys[start:stop] // (2 * num_relations), keys[start:stop] % (2 * num_relations)
        scores = _checked_scores(score_fn, q_ent, q_rel, num_entities)  # [Bq, M]
        device = scores.device
        index = index.to(device)
        known_rows, known = index.lookup(q_ent.to(device), q_rel.to(device))  # [T] pairs, rows ascending
        block = CPU_RANK_QUERIES if device.type == "cpu" else stop - start
        edges = torch.searchsorted(known_rows, torch.arange(0, stop - start + block, block, device=device)).tolist()
        for i, first in enumerate(range(start, stop, block)):  # query blocks whose copies stay in cache
            last = min(first + block, stop)
            sub = scores[first - start : last - start]  # [b, M]
            pairs = (known_rows[edges[i] : edges[i + 1]] - (first - start), known[edges[i] : edges[i + 1]])
            masked = _filtered_copy(sub, *pairs)  # [b, M]
            for chunk in members[bounds[first] : bounds[last]].split(batch_size):  # rank positions of these queries
                row = (query_of[chunk] - first).to(device)  # [Bt] query row of each rank
                t = target[chunk].to(device)  # [Bt]
                ranks[chunk.cpu()] = _realistic_ranks(sub, masked, pairs, row, t).cpu()
    return ranks


def rank_metrics(ranks: torch.Tensor) -> dict[str, float]:
    """Mean reciprocal rank, mean rank and Hits@1/3/10 of ranks [N] (realistic ranks count a
    hit only when the rank itself is <= k, so a tie that straddles k counts as a miss)."""
    if ranks.numel() == 0:
        raise ValueError("ranks is empty: no queries were ranked")
    ranks = ranks.double().flatten()
    if bool((ranks < 1).any()):
        raise ValueError("ranks must be >= 1")
    metrics = {"mrr": float((1.0 / ranks).mean()), "mr": float(ranks.mean())}
    for k in (1, 3, 10):
        metrics[f"hits@{k}"] = float((ranks <= k).double().mean())
    return metrics


@torch.no_grad()
def _top_k_lowest_id_ties(ranked: torch.Tensor, k: int) -> torch.Tensor:
    """Ids [B, k] of the k best scores per row of ranked [B, M], ties broken by the lower id,
    -1 where the score is -inf (filtered). A full sort of [B, M] is what this avoids: the
    k-th best value fixes which entries make it (all better ones, then the lowest-id equal
    ones), and only those k are sorted."""
    kth = ranked.topk(k, dim=1).values[:, -1:]  # [B, 1]
    better = ranked > kth  # [B, M]
    equal = ranked == kth
    room = k - better.sum(dim=1, keepdim=True)  # [B, 1] places left for ties at the k-th value
    chosen = better | (equal & (equal.cumsum(dim=1) <= room))  # exactly k per row
    ids = chosen.nonzero()[:, 1].view(ranked.shape[0], k)  # [B, k] ascending ids
    values = ranked.gather(1, ids)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices  # ties keep id order
    ids, values = ids.gather(1, order), values.gather(1, order)
    return torch.where(values == float("-inf"), torch.full_like(ids, -1), ids)


def top_k_filtered(
    score_fn: ScoreFn,
    queries_ent: torch.Tensor,
    queries_rel: torch.Tensor,
    filter_index: FilterIndex,
    k: int,
    keep: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Top-k entity ids [N, k] (int64, CPU) per query (entity [N], relation [N] in [0, 2R)),
    best first, with every known answer filtered out except the query's own ``keep`` [N] target.

    Ties are broken by the lower entity id. If fewer than k entities remain after filtering
    (or some score -inf), the row is padded with -1.
    """
    _check_batch_size(batch_size)
    num_entities = filter_index.num_entities
    if not 1 <= k <= num_entities:
        raise ValueError(f"k must be in [1, num_entities={num_entities}], got {k}")
    if queries_ent.shape != queries_rel.shape or queries_ent.ndim != 1:
        raise ValueError(
            f"queries_ent and queries_rel must be 1-D of equal length, got "
            f"{tuple(queries_ent.shape)} and {tuple(queries_rel.shape)}"
        )
    if keep is not None and keep.shape != queries_ent.shape:
        raise ValueError(f"keep must have shape {tuple(queries_ent.shape)}, got {tuple(keep.shape)}")
    for name, ids, bound in (
        ("queries_ent", queries_ent, num_entities),
        ("queries_rel", queries_rel, 2 * filter_index.num_relations),
        ("keep", keep, num_entities),
    ):
        if ids is not None and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= bound):
            raise ValueError(f"{name} has ids outside [0, {bound})")
    index = filter_index  # moved to the scores' device once, on the first batch
    out = []
    for start in range(0, queries_ent.numel(), batch_size):
        e = queries_ent[start : start + batch_size].long()
        r = queries_rel[start : start + batch_size].long()
        scores = _checked_scores(score_fn, e, r, num_entities)  # [B, M]
        device = scores.device
        index = index.to(device)
        filtered = index.mask(e.to(device), r.to(device))  # [B, M]
        if keep is not None:
            kept = keep[start : start + batch_size].long().to(device)
            filtered[torch.arange(kept.numel(), device=device), kept] = False
        top = _top_k_lowest_id_ties(scores.masked_fill(filtered, float("-inf")), k)  # [B, k]
        out.append(top.cpu())
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)
