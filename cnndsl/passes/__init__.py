"""Passes over the IR graph: plain functions named by their verb."""

from cnndsl.passes.counts import count
from cnndsl.passes.rf import receptive_fields
from cnndsl.passes.shapes import infer_shapes

__all__ = ["count", "infer_shapes", "receptive_fields"]
