"""A pack's checkpoint: tensors and plain containers only, written atomically, read with weights_only=True.

`torch.load(weights_only=True)` refuses any pickled object other than tensors and plain Python values, so a
checkpoint file planted or corrupted outside the engine cannot run code when it is read; such a file, one
written for another pack, or one of an older format, is reported in one line and ignored (training starts
from scratch).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

import torch

from batchscale.errors import OutputNotWritable

from batchscale.spec.runs import config_hash

FORMAT = 3  # bump when what a checkpoint holds changes (3: packs, weights_only)


def pack_hash(runs: list[dict]) -> str:
    """Identity of a pack: the config hashes of its runs, in order."""
    return hashlib.sha256(json.dumps([config_hash(run) for run in runs]).encode()).hexdigest()[:16]


def save(path: Path, pack_id: str, content: dict) -> None:
    """Write `content` (tensors and plain containers) as the checkpoint of pack `pack_id`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save({"format": FORMAT, "pack_hash": pack_id, **content}, temporary)
        os.replace(temporary, path)
    except (OSError, RuntimeError) as err:  # a full disk surfaces as a RuntimeError from torch's C++ writer
        temporary.unlink(missing_ok=True)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OutputNotWritable(f"cannot write checkpoint {path} ({reason[:160]}); free disk space there or move "
                                f"results/, then rerun: training resumes from the last checkpoint") from None


def load(path: Path | None, pack_id: str, device: torch.device) -> dict | None:
    """The checkpoint's content when it belongs to this pack and format; otherwise None, said in one line."""
    if path is None or not path.exists():
        return None
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"ignoring checkpoint {path}: not a plain-tensor checkpoint ({reason[:120]}); training from the start",
              file=sys.stderr)
        return None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("pack_hash") != pack_id:
        print(f"ignoring {path}: written for another run config or engine version", file=sys.stderr)
        return None
    return saved
