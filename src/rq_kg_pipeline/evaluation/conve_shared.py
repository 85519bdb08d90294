"""Codes-only ConvE scores with the entity-only and relation-only parts of the query computed once.

ConvE stacks the entity image (rows 0..k_h-1) over the relation image (rows k_h..2k_h-1) and
convolves with a ks x ks kernel, so output rows 0..k_h-ks see only the entity and rows
k_h..2k_h-ks only the relation; batch norm (eval, folded into the convolution), ReLU and
dropout (eval) act per element, and the fc layer is linear. Those rows' fc contributions are
therefore tables over entities [M, D] and relations [2R, D], and each query only convolves the
ks-1 mixed rows: on FB15k-237's recipe (k_h 10, ks 7) 6 of 14 rows. Same function as
``ConvEScorer.forward`` up to float rounding (sums in another order); for ranking many queries,
never in training. On FB15k-237's 162k distinct queries: ~45 s of CPU instead of ~85 s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rq_kg_pipeline.evaluation.link_prediction import codes_only_score_fn, model_device
from rq_kg_pipeline.evaluation.ranking import ScoreFn
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.models.conve import ConvEScorer
from rq_kg_pipeline.models.rqgcn import RQGCN


def _eval_affine(norm: torch.nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch norm in eval mode as per-channel scale and shift [C]."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    return scale, shift if norm.bias is None else shift + norm.bias


def _folded_conv(scorer: ConvEScorer) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight [F, 1, ks, ks] and bias [F] of bn1(conv(bn0(.))) as one convolution (eval)."""
    in_scale, in_shift = _eval_affine(scorer.bn0)  # [1]
    out_scale, out_shift = _eval_affine(scorer.bn1)  # [F]
    weight = scorer.conv.weight * in_scale  # [F, 1, ks, ks]
    bias = scorer.conv.bias + in_shift * scorer.conv.weight.sum(dim=(1, 2, 3))  # [F]
    return weight * out_scale.view(-1, 1, 1, 1), bias * out_scale + out_shift


def _fc_columns(scorer: ConvEScorer, rows: slice) -> torch.Tensor:
    """The fc weight columns [D, F * len(rows) * W_out] that read conv output ``rows``."""
    out_h = 2 * scorer.k_h - scorer.conv.kernel_size[0] + 1
    weight = scorer.fc.weight.view(scorer.dim, scorer.conv.out_channels, out_h, -1)  # [D, F, H_out, W_out]
    return weight[:, :, rows, :].reshape(scorer.dim, -1)


@torch.no_grad()
def shared_part_score_fn(model: RQGCN, graph: KGGraph, codes: torch.Tensor) -> ScoreFn:
    """Codes-only scores [B, M] as :func:`codes_only_score_fn`, faster for many queries.

    Falls back to :func:`codes_only_score_fn` when the scorer is not ConvE, its kernel is
    taller than the entity image (no row sees the entity alone) or its batch norms keep no
    running statistics.
    """
    model.eval()
    scorer = model.scorer
    if (
        not isinstance(scorer, ConvEScorer)
        or scorer.conv.kernel_size[0] > scorer.k_h
        or scorer.bn0.running_var is None  # batch statistics even in eval: nothing to fold
        or scorer.bn1.running_var is None
    ):
        return codes_only_score_fn(model, graph, codes)
    device = model_device(model)
    entities = model.entity_vectors_from_codes(codes.to(device).long())  # [M, D]
    _, relations = model.encode(graph.to(device))  # [2R, D]
    k_h, k_w, ks = scorer.k_h, scorer.k_w, scorer.conv.kernel_size[0]
    pure = k_h - ks + 1  # output rows that see only the entity (the first) or only the relation (the last)
    ent_img = entities.view(-1, 1, k_h, k_w)  # [M, 1, k_h, k_w]
    rel_img = relations.view(-1, 1, k_h, k_w)  # [2R, 1, k_h, k_w]
    weight, bias = _folded_conv(scorer)
    conv_rows = lambda image: F.conv2d(image, weight, bias).relu_()  # noqa: E731  [B, F, h - ks + 1, W_out]
    ent_part = conv_rows(ent_img).flatten(1) @ _fc_columns(scorer, slice(0, pure)).t()  # [M, D]
    rel_part = conv_rows(rel_img).flatten(1) @ _fc_columns(scorer, slice(k_h, k_h + pure)).t()  # [2R, D]
    rel_part = rel_part + scorer.fc.bias
    mixed_fc = _fc_columns(scorer, slice(pure, k_h)).t().contiguous()  # [F * (ks-1) * W_out, D]
    ent_low = ent_img[:, :, pure:, :]  # [M, 1, ks-1, k_w] entity rows the mixed outputs see
    rel_high = rel_img[:, :, : ks - 1, :]  # [2R, 1, ks-1, k_w]

    def score(heads: torch.Tensor, rels: torch.Tensor) -> torch.Tensor:
        heads, rels = heads.to(device), rels.to(device)
        with torch.no_grad():
            hidden = ent_part[heads] + rel_part[rels]  # [B, D]
            if ks > 1:
                mixed = conv_rows(torch.cat([ent_low[heads], rel_high[rels]], dim=2))  # [B, F, ks-1, W_out]
                hidden = torch.addmm(hidden, mixed.flatten(1), mixed_fc)  # [B, D]
            query = F.relu(scorer.bn2(hidden))  # [B, D]
            return (query @ entities.t()).float()  # [B, M]

    return score
