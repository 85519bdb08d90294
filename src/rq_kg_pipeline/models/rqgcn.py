"""RQGCN: CompGCN encoder -> latent sequence -> residual quantizer -> decoder -> ConvE link prediction.

One training step: the GCN runs over the full graph (entities [M, D], relations [2R, D]); each
distinct batch head's vector becomes L latent vectors (:meth:`RQGCN.latent_sequence`, the one
function shared by training and code extraction), which are quantized; the decoder
(:meth:`RQGCN.aggregate`) reads the *quantized* sequence (straight-through gradient to the
encoder) and gives the query entity vector that ConvE scores, with the relation, against the
continuous GCN table of all entities. ``recon_loss`` ties the decoded vector to the head's GCN
vector so that, at codes-only evaluation, candidates decoded from codes share that space.
With ``semantic_dim`` E > 0 a linear head maps the decoded vector to a text-embedding space
(:meth:`RQGCN.semantic_projection`, trained by the semantic loss of the training loop); with 0
no head exists and the model is exactly the one without the feature.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.models.compgcn import CompGCNEncoder
from rq_kg_pipeline.models.conve import ConvEScorer, default_conve_shape
from rq_kg_pipeline.models.rq_codebook import RQCodebook, RQOutput
from rq_kg_pipeline.models.sharding import BatchShard
from rq_kg_pipeline.models.transformer import SequenceEncoder


class RQGCNOutput(NamedTuple):
    """What one forward pass gives the training loop."""

    logits: Tensor  # [B, M] scores of (head, rel) against all entities
    quant: RQOutput  # of the latent sequences of torch.unique(heads) (sorted ids), [U, L, ...]
    recon_loss: Tensor  # scalar, mean over distinct heads and dims of (aggregate(z_q) - ent[heads])^2
    decoded: Tensor  # [U, D] aggregate(z_q) of torch.unique(heads): what the semantic head reads


class RQGCN(nn.Module):
    """SSQR-style model with residual quantization; ``latent_dim`` = ``gcn_dim`` = D."""

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        *,
        init_dim: int = 100,
        gcn_dim: int = 200,
        gcn_layers: int = 2,
        comp: str = "mult",
        gcn_dropout: float = 0.1,
        activation: str = "tanh",
        backend: str = "native",
        seq_len: int = 16,
        num_code: int = 1024,
        num_quantizers: int = 4,
        beta: float = 0.25,
        tf_layers: int = 1,
        att_head: int = 4,
        tf_dropout: float = 0.1,
        k_h: int | None = None,
        k_w: int | None = None,
        num_filters: int = 32,
        kernel_size: int = 7,
        conve_dropout: tuple[float, float, float] = (0.2, 0.3, 0.3),
        kmeans_init: bool = True,
        revive_dead_codes: bool = True,
        semantic_dim: int = 0,
    ) -> None:
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
        if num_code < 2:
            raise ValueError(f"num_code must be >= 2, got {num_code}")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if gcn_dim < 1:
            raise ValueError(f"gcn_dim must be >= 1, got {gcn_dim}")
        if att_head < 1 or gcn_dim % att_head:
            raise ValueError(f"att_head must be >= 1 and divide gcn_dim={gcn_dim}, got att_head={att_head}")
        if semantic_dim < 0:
            raise ValueError(f"semantic_dim must be >= 0 (0: no semantic head), got {semantic_dim}")
        if tf_layers < 0:
            raise ValueError(f"tf_layers must be >= 0, got {tf_layers}")
        if not 0.0 <= tf_dropout < 1.0:
            raise ValueError(f"tf_dropout must be in [0, 1), got {tf_dropout}")
        if len(conve_dropout) != 3:
            raise ValueError(f"conve_dropout must be (input, feature, hidden) dropouts, got {conve_dropout!r}")
        if (k_h is None) != (k_w is None):
            raise ValueError(f"give both k_h and k_w or neither, got k_h={k_h}, k_w={k_w}")
        if k_h is None:
            k_h, k_w = default_conve_shape(gcn_dim)
        elif k_h * k_w != gcn_dim:
            raise ValueError(f"k_h * k_w must equal gcn_dim={gcn_dim}, got k_h={k_h}, k_w={k_w}")
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.seq_len = seq_len
        self.num_code = num_code
        self.num_quantizers = num_quantizers
        self.latent_dim = gcn_dim
        self.encoder = CompGCNEncoder(num_entities, num_relations, init_dim, gcn_dim, gcn_layers, comp, gcn_dropout, activation, backend)
        self.to_sequence = nn.Linear(gcn_dim, seq_len * gcn_dim)
        self.position = nn.Parameter(0.02 * torch.randn(seq_len, gcn_dim))  # [L, D]
        self.sequence_encoder = SequenceEncoder(gcn_dim, att_head, tf_layers, tf_dropout)
        self.quantizer = RQCodebook(num_code, gcn_dim, num_quantizers, beta, kmeans_init=kmeans_init, revive_dead_codes=revive_dead_codes)
        self.decoder = nn.Linear(seq_len * gcn_dim, gcn_dim)
        self.scorer = ConvEScorer(gcn_dim, k_h, k_w, num_filters, kernel_size, *conve_dropout)
        # Built last, so the other modules draw the same initial weights with or without it.
        # Linear: the text meaning must be linearly readable from the decoded codes, not recoverable
        # only by a deep head that could learn it regardless of what the codes hold.
        self.semantic_dim = semantic_dim
        self.semantic_head = nn.Linear(gcn_dim, semantic_dim) if semantic_dim else None

    # ------------------------------------------------------------------ building blocks
    def encode(self, graph: KGGraph) -> tuple[Tensor, Tensor]:
        """CompGCN over the graph -> (entities [M, D], relations [2R, D])."""
        return self.encoder(graph)

    def latent_sequence(self, ent_vecs: Tensor) -> Tensor:
        """[B, D] -> [B, L, D]: linear D -> L*D, + position embeddings, transformer layers.

        The only path from entity vectors to latents, for training and extraction alike.
        """
        seq = self.to_sequence(ent_vecs).view(ent_vecs.shape[0], self.seq_len, self.latent_dim)  # [B, L, D]
        return self.sequence_encoder(seq + self.position)

    def aggregate(self, seq: Tensor) -> Tensor:
        """Decoder [B, L, D] -> [B, D]: flatten + linear, so each position has its own weights.

        Position-aware by construction (the mirror of ``to_sequence``); a pooled average
        would make the code sequence order-blind and waste the L positions.
        """
        return self.decoder(seq.reshape(seq.shape[0], self.seq_len * self.latent_dim))

    def semantic_projection(self, decoded: Tensor) -> Tensor:
        """Decoded entity vectors [B, D] -> text-embedding space [B, E] (needs ``semantic_dim`` > 0)."""
        if self.semantic_head is None:
            raise ValueError("this RQGCN has no semantic head: build it with semantic_dim > 0")
        return self.semantic_head(decoded)

    def score(
        self, query_ent: Tensor, rel_ids: Tensor, rel_table: Tensor, candidates: Tensor, shard: BatchShard | None = None
    ) -> Tensor:
        """ConvE logits [B, M] of queries (query_ent [B, D], rel_ids [B]) against candidates [M, D]."""
        return self.scorer(query_ent, rel_table.index_select(0, rel_ids), candidates, shard)

    # ------------------------------------------------------------------------- training
    def forward(
        self,
        graph: KGGraph,
        heads: Tensor,
        rels: Tensor,
        unique_heads: Tensor | None = None,
        head_index: Tensor | None = None,
        shard: BatchShard | None = None,
        valid_heads: Tensor | None = None,
    ) -> RQGCNOutput:
        """heads [B] entity ids, rels [B] relation ids in [0, 2R) -> logits, quantizer output, recon loss.

        ``unique_heads`` [U] / ``head_index`` [B] (``torch.unique(heads, return_inverse=True)``)
        may come precomputed with the batch: on CUDA, computing them here would stall the
        host until the GPU catches up (data-dependent output size).

        Data-parallel training passes this process's rows of the batch as heads/rels/head_index
        with ``shard`` saying where they sit, and the whole batch's ``unique_heads``: the graph
        encoder, tokenisation and quantizer run on every process alike, ConvE on the shard.

        ``valid_heads`` [U] bool marks the real entries of a ``unique_heads`` padded to a fixed
        length (a CUDA-graph step, :mod:`rq_kg_pipeline.training.cuda_graph`): padding is
        tokenised but counts in no loss, gradient or statistic, so the step equals the unpadded one.
        """
        if heads.ndim != 1 or heads.shape != rels.shape or heads.numel() == 0:
            raise ValueError(f"heads and rels must be non-empty 1-D tensors of one length, got {tuple(heads.shape)} and {tuple(rels.shape)}")
        if heads.device.type == "cpu":  # on CUDA an out-of-range id fails in index_select instead (no host sync)
            if int(heads.min()) < 0 or int(heads.max()) >= self.num_entities:
                raise ValueError(f"heads must lie in [0, num_entities={self.num_entities})")
            if int(rels.min()) < 0 or int(rels.max()) >= 2 * self.num_relations:
                raise ValueError(f"rels must lie in [0, 2 * num_relations={2 * self.num_relations})")
        if (unique_heads is None) != (head_index is None):
            raise ValueError("give both unique_heads and head_index or neither")
        if valid_heads is not None and (unique_heads is None or valid_heads.shape != unique_heads.shape):
            raise ValueError("valid_heads needs unique_heads and must have its shape")
        if unique_heads is None:
            unique_heads, head_index = torch.unique(heads, return_inverse=True)  # [U], [B]
        ent, rel = self.encode(graph)  # [M, D], [2R, D]
        head_vecs = ent.index_select(0, unique_heads)  # [U, D]
        quant = self.quantizer.quantize(self.latent_sequence(head_vecs), valid_heads)  # z_q [U, L, D]
        decoded = self.aggregate(quant.z_q)  # [U, D]
        if valid_heads is None:
            recon_loss = F.mse_loss(decoded, head_vecs)
        else:  # the mean over valid rows, with their count kept on the device
            keep = valid_heads.to(torch.float32).unsqueeze(1)  # [U, 1]
            recon_loss = ((decoded.float() - head_vecs.float()).pow(2) * keep).sum() / (keep.sum() * self.latent_dim)
        logits = self.score(decoded.index_select(0, head_index), rels, rel, ent, shard)  # [B, M]
        return RQGCNOutput(logits, quant, recon_loss, decoded)

    # ----------------------------------------------------------------------- extraction
    @torch.no_grad()
    def all_latent_sequences(self, graph: KGGraph, batch_size: int = 4096) -> Tensor:
        """[M, L, D] latent sequences of every entity (before quantization), in eval mode."""
        return self._all_entities(graph, batch_size, lambda z: z)

    def _all_entities(self, graph: KGGraph, batch_size: int, fn) -> Tensor:
        return torch.cat(self.map_latent_blocks(graph, fn, batch_size))

    @torch.no_grad()
    def map_latent_blocks(self, graph: KGGraph, fn, batch_size: int = 4096) -> list:
        """Encode the graph once (eval mode), then ``fn(latent_sequence(block))`` [b, L, D] for
        consecutive blocks of entities in id order; the list of fn's results.

        Blocks are ``batch_size`` entities, on CPU split further into blocks of
        :data:`CPU_SEQUENCE_ROWS` (the remainder joined to the last one: no block takes a
        small-matrix kernel path; measured on CPU: blocks of >= 8 entities give every entity the
        same bits whatever the block size), so the latents are those of ``batch_size`` calls while
        the transformer's activations stay in cache.
        """
        return self._map_blocks(graph, fn, batch_size)[0]

    def _map_blocks(self, graph: KGGraph, fn, batch_size: int) -> tuple[list, Tensor]:
        """(:meth:`map_latent_blocks`'s list, relation table [2R, D] of the same encode)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        was_training = self.training
        self.eval()
        try:
            ent, rel = self.encode(graph)  # [M, D], [2R, D]
            return [fn(self.latent_sequence(ent[a:b])) for a, b in _entity_blocks(ent.shape[0], batch_size, ent.device)], rel
        finally:
            self.train(was_training)

    @torch.no_grad()
    def codes_and_relations(self, graph: KGGraph, batch_size: int = 4096) -> tuple[Tensor, Tensor]:
        """(codes [M, L, Q] int64 of every entity, relation table [2R, D]) from one encode of the
        graph, in eval mode: all a codes-only validation pass needs (no second encode)."""
        blocks, rel = self._map_blocks(graph, self.quantizer.cal_codes, batch_size)
        return torch.cat(blocks), rel

    @torch.no_grad()
    def cal_allent_codes(self, graph: KGGraph, batch_size: int = 4096) -> Tensor:
        """[M, L, Q] int64 codes of every entity, in eval mode (training mode restored after)."""
        return self._all_entities(graph, batch_size, self.quantizer.cal_codes)

    @torch.no_grad()
    def cal_allent_codes_emds(self, graph: KGGraph, batch_size: int = 4096) -> Tensor:
        """[M, L, D] quantized latent sequences (sum of chosen codes) of every entity, in eval mode."""
        return self._all_entities(graph, batch_size, self.quantizer.cal_code_emds)

    def entity_vectors_from_codes(self, codes: Tensor) -> Tensor:
        """Codes-only path: [N, L, Q] -> [N, D] = aggregate(sum of the chosen codes)."""
        if codes.ndim != 3 or codes.shape[1] != self.seq_len:
            raise ValueError(f"codes must be [N, seq_len={self.seq_len}, num_quantizers={self.num_quantizers}], got {tuple(codes.shape)}")
        return self.aggregate(self.quantizer.decode_from_codes(codes))

    def continuous_query_vectors(self, ent_vecs: Tensor) -> Tensor:
        """Reference path without quantization: [B, D] -> aggregate(latent_sequence(x)) [B, D]."""
        return self.aggregate(self.latent_sequence(ent_vecs))


# Entities per ``latent_sequence`` call in extraction on CPU: 256 x 16 tokens keep the
# transformer's activations in cache (2x faster than 4096 on 2 cores).
CPU_SEQUENCE_ROWS = 256


def _entity_blocks(n: int, batch_size: int, device: torch.device) -> list[tuple[int, int]]:
    """[start, stop) entity blocks: ``batch_size`` batches, on CPU cut into CPU_SEQUENCE_ROWS
    pieces with each batch's remainder merged into its last piece."""
    blocks = []
    for first in range(0, n, batch_size):
        last = min(first + batch_size, n)
        step = CPU_SEQUENCE_ROWS if device.type == "cpu" else last - first
        starts = list(range(first, last, step))
        if len(starts) > 1 and last - starts[-1] < step:
            starts.pop()
        blocks.extend(zip(starts, starts[1:] + [last]))
    return blocks
