"""Checkpoints: plain tensors and metadata, a content hash, safe loading.

Why this format: ``torch.load(weights_only=True)`` refuses arbitrary pickled objects, so a
checkpoint downloaded from elsewhere cannot execute code; it therefore holds only tensors, dicts,
lists, strings and numbers (the config as a JSON string). A sha256 over a canonical serialisation
of the whole content is stored beside it and re-computed on load, so a tampered or bit-rotted
checkpoint is refused, and the hash identifies the model in every deliverable's provenance.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from aid.errors import CheckpointError
from aid.io import atomic_path

log = logging.getLogger(__name__)

FORMAT = "aid-edm/1"


def _feed(h: Any, obj: Any) -> None:
    """Canonical, type-tagged serialisation of ``obj`` into hash ``h``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, bool) or obj is None:
        h.update(f"B{obj}".encode())
    elif isinstance(obj, int):
        h.update(f"I{obj}".encode())
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif isinstance(obj, str):
        b = obj.encode()
        h.update(f"S{len(b)}:".encode() + b)
    else:
        raise TypeError(f"checkpoint content may hold only tensors/dicts/lists/str/numbers, not {type(obj).__name__}")


def content_hash(content: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    _feed(h, content)
    return h.hexdigest()


def save_checkpoint(content: Mapping[str, Any], path: str | os.PathLike[str]) -> str:
    """Write ``{"format", "sha256", "content"}`` atomically; returns the sha256."""
    digest = content_hash(content)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"format": FORMAT, "sha256": digest, "content": dict(content)}, tmp)
    log.info("wrote checkpoint %s (sha256 %s)", path, digest[:12])
    return digest


def load_checkpoint(
    path: str | os.PathLike[str], expect_variables: Sequence[str] | None = None
) -> tuple[dict[str, Any], str]:
    """Load and verify a checkpoint; returns (content, sha256). Every failure is a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint does not exist.", "run `aid train` or fix model.checkpoint.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file contains pickled Python objects that are not plain "
            f"tensors/containers (weights_only=True: {str(exc).splitlines()[0]}).",
            "only load aid checkpoints written by `aid train`; retrain or obtain the original file.",
        ) from exc
    except Exception as exc:  # truncated zip, not a torch file at all
        raise CheckpointError(
            f"{path}: cannot be read as a torch checkpoint ({type(exc).__name__}: {exc}).",
            "the file is corrupt or truncated; re-run the train rule (delete the file first).",
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "content" not in payload:
        raise CheckpointError(
            f"{path}: not an aid model checkpoint (format {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r}, expected {FORMAT}).",
            "point model.checkpoint at a file written by `aid train`.",
        )
    content = payload["content"]
    digest = content_hash(content)
    if digest != payload.get("sha256"):
        raise CheckpointError(
            f"{path}: checkpoint hash mismatch (stored {str(payload.get('sha256'))[:16]}..., content {digest[:16]}...): "
            "the file was modified after training.",
            "do not edit checkpoints; restore the original file or retrain.",
        )
    if expect_variables is not None and list(content["variables"]) != list(expect_variables):
        raise CheckpointError(
            f"{path}: checkpoint was trained on variables {list(content['variables'])}, "
            f"but {list(expect_variables)} were requested.",
            "retrain with the configured search.variables, or use a checkpoint trained on this variable set.",
        )
    return content, digest
