"""The entity codes bundle and its files under the seed's names.

Files (``stem`` = ``{dataset}_{seq_len}_{num_code}_{num_quantizers}_rq``, or for plain VQ,
Q = 1, ``{dataset}_{seq_len}_{num_code}``):
  ``{stem}.pt``      codes [M, L, Q] (VQ: [M, L]) in the smallest integer dtype that holds K
  ``{stem}_emd.pt``  quantized embeddings [M, L, D] float32 (for Q > 1 the seed names it ``..._rq_emd.pt``)
  ``{stem}.json``    sidecar: entity order reference, shapes, parameters, checkpoint hash,
                     the disambiguation index per entity and collision count
All tensors load with ``torch.load(..., weights_only=True)``. Each file is replaced atomically and
the sidecar, written after the tensors, records their SHA-256: a folder whose writer was killed
between two files (new codes beside the old sidecar) is refused on load, never read as a mix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rq_kg_pipeline.io.atomic import atomic_path, atomic_torch_save

MANIFEST = "codes_manifest.json"  # names the current stem when several configurations share a folder


def smallest_int_dtype(num_codes: int) -> torch.dtype:
    """uint8 for K <= 256, int16 for K <= 32768, else int32."""
    if num_codes <= 256:
        return torch.uint8
    if num_codes <= 2**15:
        return torch.int16
    return torch.int32


def seed_file_stem(dataset: str, seq_len: int, num_code: int, num_quantizers: int) -> str:
    """The seed's naming: ``..._rq`` for residual quantization, plain for VQ (Q = 1)."""
    base = f"{dataset}_{seq_len}_{num_code}"
    return base if num_quantizers == 1 else f"{base}_{num_quantizers}_rq"


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hash of the weights (names, dtypes, shapes, bytes): identifies the checkpoint codes came from."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@dataclass
class EntityCodes:
    """Codes of all M entities, their quantized embeddings, and what they mean."""

    codes: torch.Tensor  # [M, L, Q] integer
    embeddings: torch.Tensor  # [M, L, D] float32, sum of the chosen code vectors per position
    disambiguation: torch.Tensor  # [M] int64, 0 unless the entity's sequence collided
    num_code: int
    dataset: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_quantizers(self) -> int:
        return int(self.codes.shape[2])

    @property
    def seq_len(self) -> int:
        return int(self.codes.shape[1])

    @property
    def stem(self) -> str:
        return seed_file_stem(self.dataset, self.seq_len, self.num_code, self.num_quantizers)

    def sidecar(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "files": {"codes": f"{self.stem}.pt", "embeddings": f"{self.stem}_emd.pt"},
            "codes_shape": list(self.codes.shape if self.num_quantizers > 1 else self.codes.shape[:2]),
            "codes_dtype": str(smallest_int_dtype(self.num_code)).removeprefix("torch."),
            "embeddings_shape": list(self.embeddings.shape),
            "num_code": self.num_code,
            "seq_len": self.seq_len,
            "num_quantizers": self.num_quantizers,
            "layout": "codes[e, l, q] = code of entity e (row of the entity vocabulary) at position l, level q",
            "disambiguation": self.disambiguation.tolist(),
            **self.meta,
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_entity_codes(bundle: EntityCodes, directory: str | Path) -> Path:
    """Write the seed-named files atomically, sidecar after tensors, manifest last; returns the codes file."""
    directory = Path(directory)
    sidecar = bundle.sidecar()
    codes = bundle.codes.to(smallest_int_dtype(bundle.num_code))
    if bundle.num_quantizers == 1:
        codes = codes[:, :, 0]  # the seed's VQ file is [M, L]
    sidecar["sha256"] = {}
    for key, tensor in (("codes", codes), ("embeddings", bundle.embeddings.float())):
        atomic_torch_save(tensor.contiguous().clone(), directory / sidecar["files"][key])
        sidecar["sha256"][key] = file_sha256(directory / sidecar["files"][key])
    for name, content in ((f"{bundle.stem}.json", sidecar), (MANIFEST, {"current": f"{bundle.stem}.json"})):
        with atomic_path(directory / name) as tmp:
            tmp.write_text(json.dumps(content, indent=1, sort_keys=True), encoding="utf-8")
    return directory / sidecar["files"]["codes"]


def load_entity_codes(directory: str | Path) -> EntityCodes:
    """Read what :func:`save_entity_codes` wrote (the configuration the manifest names)."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: run the extraction pipeline first")
    sidecar = json.loads((directory / json.loads(manifest.read_text())["current"]).read_text(encoding="utf-8"))
    for key, digest in sidecar.get("sha256", {}).items():
        path = directory / sidecar["files"][key]
        if not path.is_file() or file_sha256(path) != digest:
            raise ValueError(
                f"{path} does not match the sidecar {manifest.parent / json.loads(manifest.read_text())['current']} "
                "(a write was interrupted or the file was changed): run the extraction pipeline again"
            )
    codes = torch.load(directory / sidecar["files"]["codes"], weights_only=True)
    if codes.ndim == 2:
        codes = codes.unsqueeze(-1)  # VQ [M, L] -> [M, L, 1]
    embeddings = torch.load(directory / sidecar["files"]["embeddings"], weights_only=True)
    known = {"dataset", "num_code", "disambiguation"}
    return EntityCodes(
        codes=codes.long(),
        embeddings=embeddings,
        disambiguation=torch.tensor(sidecar["disambiguation"], dtype=torch.long),
        num_code=int(sidecar["num_code"]),
        dataset=sidecar["dataset"],
        meta={k: v for k, v in sidecar.items() if k not in known and k not in _DERIVED},
    )


_DERIVED = {"files", "sha256", "codes_shape", "codes_dtype", "embeddings_shape", "seq_len", "num_quantizers", "layout"}


def check_codes_match(bundle: EntityCodes, state_dict: Mapping[str, torch.Tensor] | None = None, entity_labels: list[str] | None = None) -> None:
    """Refuse codes that were extracted from other weights or for another entity order
    (e.g. after retraining without re-extracting): they would silently mean other entities."""
    if state_dict is not None and bundle.meta.get("checkpoint_sha256") != state_dict_sha256(state_dict):
        raise ValueError(
            f"the entity codes were extracted from checkpoint {bundle.meta.get('checkpoint_sha256', 'unknown')[:12]}, "
            "not from the current model: run the extraction pipeline again (kedro run --pipelines=extraction)"
        )
    if entity_labels is not None and bundle.meta.get("entities") is not None and bundle.meta["entities"] != list(entity_labels):
        raise ValueError("the entity codes follow another entity vocabulary than the current one: run extraction again")
