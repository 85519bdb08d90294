"""Thin adapters from catalog objects to ``rq_kg_pipeline.prompts``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from rq_kg_pipeline.codes.entity_codes import EntityCodes, check_codes_match
from rq_kg_pipeline.datasets.jsonl import JSONLinesFile
from rq_kg_pipeline.evaluation.candidates import split_candidates
from rq_kg_pipeline.evaluation.conve_shared import shared_part_score_fn
from rq_kg_pipeline.evaluation.ranking import FilterIndex, both_direction_queries
from rq_kg_pipeline.kg.graph import KGGraph
from rq_kg_pipeline.kg.indexing import id_triples
from rq_kg_pipeline.models.persistence import load_model
from rq_kg_pipeline.params import GenLLMDataParams
from rq_kg_pipeline.pipelines.tracking import log_artifacts_up_to, log_metrics
from rq_kg_pipeline.prompts.card import dataset_card
from rq_kg_pipeline.prompts.columns import JSONLines
from rq_kg_pipeline.prompts.examples import EntityText, link_prediction_examples, triple_classification_examples
from rq_kg_pipeline.prompts.names import entity_display_names, relation_display_names
from rq_kg_pipeline.prompts.tokens import code_token_vocabulary, render_entity_codes, tokens_per_entity

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")


def _split_triples(
    train_ids: pd.DataFrame, valid_ids: pd.DataFrame, test_ids: pd.DataFrame, params: GenLLMDataParams
) -> dict[str, torch.Tensor]:
    """Positive triples per output split; train optionally adds valid (never test)."""
    train, valid, test = id_triples(train_ids), id_triples(valid_ids), id_triples(test_ids)
    train_examples = torch.cat([train, valid]) if "valid" in params.train_sources else train
    return {"train": train_examples, "valid": valid, "test": test}


def prepare_entity_text(
    entity_codes: EntityCodes,
    entity_vocab: pd.DataFrame,
    entity_names: pd.DataFrame,
    relation_vocab: pd.DataFrame,
) -> tuple[EntityText, list[str]]:
    """Names and rendered codes of every entity, relation names, and the new-token vocabulary."""
    check_codes_match(entity_codes, entity_labels=entity_vocab.sort_values("id")["label"].tolist())
    names, fallbacks = entity_display_names(entity_vocab, entity_names)
    if fallbacks:
        log.info("%d of %d entities have no name in the names file; their ids are shown", fallbacks, len(names))
    disambiguation = entity_codes.disambiguation
    codes = render_entity_codes(entity_codes.codes, disambiguation)
    relation_names = relation_display_names(relation_vocab.sort_values("id")["label"].tolist())
    vocabulary = code_token_vocabulary(entity_codes.num_code, entity_codes.num_quantizers, int(disambiguation.max()))
    return EntityText(names, codes, relation_names), vocabulary


def rank_candidates(
    model_checkpoint: dict[str, Any],
    graph: KGGraph,
    entity_codes: EntityCodes,
    train_ids: pd.DataFrame,
    valid_ids: pd.DataFrame,
    test_ids: pd.DataFrame,
    params: GenLLMDataParams,
) -> dict[str, torch.Tensor]:
    """Filtered top-k candidates [2N, k] (int32) per split from the model's codes-only scores.

    Train candidates are filtered with the train sources only, so which entities a train
    prompt leaves out never depends on valid/test answers; valid/test use every split, as in
    evaluation. Each distinct (entity, relation) query is scored once for all splits.
    """
    started = time.perf_counter()
    check_codes_match(entity_codes, model_checkpoint["state_dict"])
    model = load_model(model_checkpoint)
    splits = _split_triples(train_ids, valid_ids, test_ids, params)
    every_split = [id_triples(f) for f in (train_ids, valid_ids, test_ids)]
    train_filter = FilterIndex.build([splits["train"]], graph.num_entities, graph.num_relations)
    full_filter = FilterIndex.build(every_split, graph.num_entities, graph.num_relations)
    score_fn = shared_part_score_fn(model, graph, entity_codes.codes)
    k = min(params.candidates_k, graph.num_entities)
    candidates = split_candidates(score_fn, splits, train_filter, full_filter, k, params.batch_size)
    for split, top in candidates.items():
        targets = both_direction_queries(splits[split], graph.num_relations)[2]
        coverage = float((top == targets.unsqueeze(1)).any(dim=1).float().mean())
        log.info("%s: answer among the top-%d candidates for %.1f%% of %d queries", split, k, 100 * coverage, len(top))
        log_metrics({f"answer_in_candidates_{split}": coverage}, prefix="gen_llm_data.")
    seconds = time.perf_counter() - started
    log.info("ranked %d queries in %.1f s", sum(len(top) for top in candidates.values()), seconds)
    log_metrics({"ranking_seconds": seconds}, prefix="gen_llm_data.")
    return {split: top.int() for split, top in candidates.items()}


def _candidates_for(candidates: dict[str, torch.Tensor], split: str, queries: int, params: GenLLMDataParams) -> torch.Tensor:
    """The split's candidate table, refused when it was ranked for other triples or another k."""
    top = candidates.get(split)
    if top is None or top.shape[0] != queries or top.shape[1] > params.candidates_k:
        shape = None if top is None else tuple(top.shape)
        raise ValueError(
            f"link_prediction_candidates[{split!r}] has shape {shape}, expected [{queries}, <= candidates_k="
            f"{params.candidates_k}]: it was ranked with other parameters or triples; rerun the rank_candidates node"
        )
    return top


def link_prediction_split(split: str) -> Callable[..., JSONLines]:
    """Node function writing link-prediction records of one split (streamed into the JSONL dataset)."""

    def build(
        entity_text: EntityText,
        candidates: dict[str, torch.Tensor],
        train_ids: pd.DataFrame,
        valid_ids: pd.DataFrame,
        test_ids: pd.DataFrame,
        params: GenLLMDataParams,
    ) -> JSONLines:
        triples = _split_triples(train_ids, valid_ids, test_ids, params)[split]
        num_relations = len(entity_text.relation_names) // 2
        return link_prediction_examples(
            entity_text,
            both_direction_queries(triples, num_relations),
            _candidates_for(candidates, split, 2 * len(triples), params),
            num_answers=params.num_answers,
            shuffle=params.shuffle,
            seed=params.seed,
            max_examples=params.max_examples[split],
            without_codes_fraction=params.without_codes_fraction if split == "train" else 0.0,
            only_answer_in_candidates=params.train_only_answerable and split == "train",
            record_format=params.record_format,
        )

    build.__name__ = f"link_prediction_{split}"
    return build


def triple_classification_split(split: str) -> Callable[..., JSONLines]:
    """Node function writing triple-classification records of one split."""

    def build(
        entity_text: EntityText,
        train_ids: pd.DataFrame,
        valid_ids: pd.DataFrame,
        test_ids: pd.DataFrame,
        params: GenLLMDataParams,
    ) -> JSONLines:
        triples = _split_triples(train_ids, valid_ids, test_ids, params)[split]
        known = torch.cat([id_triples(f) for f in (train_ids, valid_ids, test_ids)])
        return triple_classification_examples(
            entity_text,
            triples,
            known,
            negatives_per_positive=params.negatives_per_positive[split],
            shuffle=params.shuffle,
            seed=params.seed + SPLITS.index(split),
            max_examples=params.max_examples[split],
            without_codes_fraction=params.without_codes_fraction if split == "train" else 0.0,
            record_format=params.record_format,
        )

    build.__name__ = f"triple_classification_{split}"
    return build


def write_dataset_card(
    entity_codes: EntityCodes,
    code_statistics: dict[str, Any],
    code_token_vocabulary: list[str],
    entity_text: EntityText,
    params: GenLLMDataParams,
    dataset_name: str,
    **files: JSONLinesFile,
) -> str:
    """Markdown card: counts per task and split, token format, parameters, source checkpoint."""
    counts: dict[str, dict[str, int]] = {}
    for key, handle in files.items():
        task, split = key.rsplit("_", 1)
        counts.setdefault(task, {})[split] = handle.count()
    log_metrics({f"{task}.{split}": n for task, per in counts.items() for split, n in per.items()}, prefix="gen_llm_data.examples.")
    paths = [handle.path for handle in files.values()]
    if not log_artifacts_up_to(paths, params.mlflow_max_mb, "llm_data"):
        log.info("JSONL files not logged to MLflow (over gen_llm_data.mlflow_max_mb); they stay in %s", paths[0].parent)
    return dataset_card(
        title=f"{dataset_name}: instruction data with entity codes",
        counts=counts,
        num_codes=entity_codes.num_code,
        num_quantizers=entity_codes.num_quantizers,
        seq_len=entity_codes.seq_len,
        tokens_per_entity=tokens_per_entity(entity_codes.codes, entity_codes.disambiguation),
        vocabulary_size=len(code_token_vocabulary),
        max_disambiguation=int(entity_codes.disambiguation.max()),
        checkpoint_sha256=str(entity_codes.meta.get("checkpoint_sha256", "unknown")),
        parameters=params.model_dump(),
        example_entity=(entity_text.names[0], entity_text.codes[0]),
        code_stats=code_statistics,
        record_format=params.record_format,
    )
