"""Embed a KG's entity names on a CPU machine, for training elsewhere (a GPU machine without the model package).

Entity order is the one benchmarks/train_fb15k237.py and ``--env fb15k237`` use (valid/test-only
entities kept); the file holds the labels, which the training script checks.

    python benchmarks/embed_entity_texts.py --data ../shared/data/FB15k-237 --out /tmp/fb15k237_text.pt
    python benchmarks/train_fb15k237.py --out /tmp/fb --text-embeddings /tmp/fb15k237_text.pt --semantic-weight 0.1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from rq_kg_pipeline.io.atomic import atomic_torch_save
from rq_kg_pipeline.kg.indexing import SPLITS, index_kg
from rq_kg_pipeline.kg.names import select_names
from rq_kg_pipeline.kg.tsv import read_names, read_triples
from rq_kg_pipeline.semantics.cache import cached_text_embeddings
from rq_kg_pipeline.semantics.entity_text import entity_texts

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "FB15k-237")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="default", help="'default' (packaged all-MiniLM-L6-v2) or a local folder")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--without-names", choices=("skip", "labels"), default="skip")
    args = parser.parse_args()

    started = time.perf_counter()
    indexed = index_kg({s: read_triples(args.data / f"{s}.txt") for s in SPLITS}, unseen_policy="keep")
    names_file = args.data / "entity2text.txt"
    names = select_names(read_names(names_file), indexed.entities)[0] if names_file.exists() else pd.DataFrame({"id": [], "name": []})
    texts = entity_texts(indexed.entities, names, args.without_names)
    if texts is None:
        parser.error(f"{args.data} has no entity2text.txt; --without-names labels embeds the labels instead")
    payload, reused = cached_text_embeddings(texts, args.model, args.batch_size, args.device, args.out.parent / "text_embeddings_cache")
    atomic_torch_save(payload, args.out)
    print(f"{'reused' if reused else 'computed'}: {payload['status']}, {tuple(payload['embeddings'].shape)} "
          f"in {time.perf_counter() - started:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
