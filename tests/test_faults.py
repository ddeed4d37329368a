"""Faults a job meets: a full disk while checkpointing or writing a trace leaves no temporary file and says so
in one line; a study asking for CUDA on a machine without it is refused in one line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from batchscale.engine import checkpoint
from batchscale.errors import OutputNotWritable
from batchscale.store import traces


def disk_full(*args, **kwargs):
    # what torch's C++ writer raises when the disk fills: a message of many lines (its stack)
    raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                       "data/0: file write failed\nframe #0: c10::ThrowEnforceNotMet\nframe #1: ...")


def test_a_full_disk_while_checkpointing_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", lambda content, path: (Path(path).write_bytes(b"partial"), disk_full()))
    target = tmp_path / "checkpoints" / "pack.pt"
    with pytest.raises(OutputNotWritable) as raised:
        checkpoint.save(target, "abc", {"params": []})
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"cannot write checkpoint {target} ([enforce fail")
    assert "free disk space" in message
    assert list(target.parent.iterdir()) == [], "the temporary file is removed"


def test_a_full_disk_while_writing_a_trace_leaves_no_temporary_file(tmp_path, monkeypatch):
    def no_space(temporary, result, code):
        Path(temporary).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(traces, "_write_file", no_space)
    target = tmp_path / "traces" / "seed0.h5"
    with pytest.raises(OutputNotWritable, match=r"cannot write trace .*seed0\.h5 \(No space left on device\)"):
        traces.write_trace(SimpleNamespace(), target)
    assert list(target.parent.iterdir()) == []


def test_cuda_requested_without_cuda_is_one_line(monkeypatch):
    from batchscale.engine.runtime import pick_device
    from batchscale.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as raised:
        pick_device("cuda", "s")
    assert "\n" not in str(raised.value) and "device" in str(raised.value)
