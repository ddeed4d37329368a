"""`batchscale export-tensorboard RESULTS`: every run's curves as TensorBoard scalars.

One event file per run, in OUT/{study}/{strategy}/bs{m}/seed{s}[_trial{t}]/, so that TensorBoard lists every
run by that path (its run filter takes a regex: `bs64`, `tuned/`). Each evaluation point of a trace is one
event at the trace's `step` holding train_loss, test_loss, train_acc, test_acc, lr and every other curve the
trace has (linear_approx_error, the optional metrics of `batchscale.traces.OPTIONAL_METRICS`); step, epoch,
examples_seen and wall_time are axes, not curves. A value that is not finite as a float32, TensorBoard's
scalar type (a diverged run's last loss, a metric not computed at that point), is left out: TensorBoard
cannot draw it.

The event's wall time is the trace's `wall_time` (seconds since the run started), so an export is a pure
function of the traces (same traces, same bytes) and TensorBoard's "relative" axis shows training time.

The files are written here, without TensorBoard or TensorFlow: TFRecord framing (the length, a masked
CRC-32C of the length, the record, a masked CRC-32C of the record) around hand-encoded `tensorflow.Event`
protocol buffers (wall_time = 1 double, step = 2 int64, file_version = 3 string, summary = 5 holding
values = 1 {tag = 1 string, simple_value = 2 float}). tests/test_tensorboard_export.py reads them back with
TensorBoard's own reader.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from batchscale.errors import ConfigError
from batchscale.spec.manifest import TRIAL_PART
from batchscale.store.traces import read_trace

CURVES = ("train_loss", "test_loss", "train_acc", "test_acc", "lr")  # first, in this order; then the others
AXES = ("step", "epoch", "examples_seen", "wall_time")
# "tfevents" in the name is what TensorBoard looks for; a fixed name makes a re-export replace the file
EVENT_FILE = "events.out.tfevents.0.batchscale"
FILE_VERSION = "brain.Event:2"


class ExportError(ConfigError):
    """Nothing to export, or two traces of one run; one line (a ConfigError, so the CLI prints it so)."""


# ----------------------------------------------------------------------------- TFRecord and protobuf


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli polynomial, bit-reversed
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's mask: rotate right by 15 bits and add a constant (a CRC of data holding CRCs stays useful)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # an int64 as protobuf encodes it (two's complement)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int, scalars: dict[str, float] | None = None,
          file_version: str | None = None) -> bytes:
    """A serialised `tensorflow.Event`: wall time, step and either a file version or a summary of scalars."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        values = (_length_delimited(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)
                  for tag, value in scalars.items())
        out += _length_delimited(5, b"".join(_length_delimited(1, value) for value in values))
    return out


# ----------------------------------------------------------------------------- traces to event files


def run_folder(trace: dict) -> Path:
    """{study}/{strategy}/bs{m}/seed{s}, with the trial of a tuned search as in its trace's name."""
    attrs = trace["attrs"]
    trial = json.loads(attrs["config_json"]).get("trial")
    name = f"seed{int(attrs['seed'])}" + ("" if trial is None else TRIAL_PART.format(trial=int(trial)))
    return Path(str(attrs["study"]), str(attrs["strategy"]), f"bs{int(attrs['batch_size'])}", name)


def curve_names(points: dict) -> list[str]:
    others = sorted(name for name in points if name not in CURVES and name not in AXES)
    return [name for name in CURVES if name in points] + others


def event_file(trace: dict) -> bytes:
    """The whole event file of one trace: the file version, then one event per evaluation point."""
    points = trace["points"]
    with np.errstate(over="ignore"):  # simple_value is a float32: beyond its range is inf, left out below
        curves = {name: np.asarray(points[name], dtype=np.float64).astype(np.float32) for name in curve_names(points)}
    steps, wall = np.asarray(points["step"]), np.asarray(points["wall_time"], dtype=np.float64)
    records = [tfrecord(event(float(wall[0]), int(steps[0]), file_version=FILE_VERSION))]
    for i, step in enumerate(steps):
        scalars = {name: float(values[i]) for name, values in curves.items() if np.isfinite(values[i])}
        if scalars:
            records.append(tfrecord(event(float(wall[i]), int(step), scalars)))
    return b"".join(records)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")  # TensorBoard never sees half a file
    temporary.write_bytes(data)
    os.replace(temporary, path)


def find_traces(results) -> list[Path]:
    """Every trace (*.h5) in a results folder or below it."""
    results = Path(results)
    if not results.is_dir():
        raise ExportError(f"{results}: not a folder; name the results folder (or one study's) to export")
    traces = sorted(path for path in results.rglob("*.h5") if path.is_file())
    if not traces:
        raise ExportError(f"{results}: no traces (*.h5) in it or below; run snakemake first")
    return traces


def export_tensorboard(results, out) -> dict[Path, Path]:
    """Write one event file per trace under `out`; returns {run folder: trace path}."""
    written: dict[Path, Path] = {}
    for path in find_traces(results):
        trace = read_trace(path)
        folder = Path(out) / run_folder(trace)
        if folder in written:
            raise ExportError(f"{written[folder]} and {path} are traces of the same run ({run_folder(trace)}); "
                              f"export one of them")
        _write(folder / EVENT_FILE, event_file(trace))
        written[folder] = path
    return written
