"""Read TensorBoard event files back with TensorBoard's own reader (shared by the integration tests)."""

from __future__ import annotations

import math
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.util import tensor_util

EVERYTHING = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "compressedHistograms": 0}


def load(log_dir: str | Path) -> EventAccumulator:
    """All events of the run in ``log_dir`` (one directory of event files)."""
    events = EventAccumulator(str(log_dir), size_guidance=EVERYTHING)
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> dict[int, float]:
    """``{step: value}`` of a scalar tag; fails on a duplicate step."""
    out: dict[int, float] = {}
    for event in events.Scalars(tag):
        assert event.step not in out, f"tag {tag!r} logged twice at step {event.step}"
        out[event.step] = event.value
    return out


def value_at(events: EventAccumulator, tag: str, step: int) -> float:
    """The scalar ``tag`` at ``step``, NaN when it was not written (undefined values are not)."""
    return scalars(events, tag).get(step, math.nan) if tag in events.Tags()["scalars"] else math.nan


def layout(events: EventAccumulator) -> layout_pb2.Layout:
    """The last custom-scalars layout written to the run."""
    tensor = events.Tensors("custom_scalars__config__")[-1].tensor_proto
    result = layout_pb2.Layout()
    result.ParseFromString(tensor_util.make_ndarray(tensor).item())
    return result


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    """Equal as TensorBoard stores them (float32), NaN equal to NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)
