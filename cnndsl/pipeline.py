"""The pipeline, one readable function with stop points, shared by the CLI, the API and tests:

    text --parse--> AST --build--> IR graph --infer_shapes, count, receptive_fields--> Report
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnndsl.backends.torch_names import check_layer_names  # plain data; imports no torch
from cnndsl.ir.build import build
from cnndsl.ir.graph import Graph
from cnndsl.ir.shape import Shape
from cnndsl.passes import count, infer_shapes, receptive_fields
from cnndsl.passes.counts import check_sizes
from cnndsl.passes.report import Report
from cnndsl.source import Source
from cnndsl.syntax import parse


@dataclass(frozen=True, slots=True)
class Network:
    """A checked network: its IR graph and report. Backends start from here."""

    graph: Graph
    report: Report
    source: Source

    @property
    def shapes(self) -> tuple[Shape, ...]:
        return self.report.shapes

    def to_torch(self, seed: int = 0):
        """An `nn.Module` built from the IR (imports torch)."""
        from cnndsl.backends.torch_module import to_module
        return to_module(self, seed=seed)

    def to_onnx(self, **options):
        """An `onnx.ModelProto` emitted from the IR (imports onnx, not torch)."""
        from cnndsl.backends.onnx_emit import to_onnx
        return to_onnx(self, **options)


def compile_source(source: Source, input_shape: Shape | None = None, batch: int = 1, dtype: str = "fp32",
                   training: bool = False, optimizer: str = "sgd-momentum") -> Network:
    """Parse, build and check a source; raises CnnDslError with every problem found.
    `batch`, `dtype`, `training` and `optimizer` only change the report's memory figures."""
    graph = build(parse(source), input_shape)
    check_layer_names(graph)  # the rule to_torch applies, so that check accepts only what compiles
    shapes = infer_shapes(graph)
    counts = count(graph, shapes)
    check_sizes(graph, shapes, counts)
    report = Report(graph, shapes, counts, receptive_fields(graph, shapes), source.name, batch, dtype,
                    training, optimizer)
    return Network(graph, report, source)


def load(path: str | Path, **kwargs) -> Network:
    """Read and check an .arch file (see compile_source for the keyword arguments)."""
    return compile_source(Source.from_path(path), **kwargs)


def loads(text: str, name: str = "<string>", **kwargs) -> Network:
    """Check .arch text given as a string."""
    return compile_source(Source(name, text), **kwargs)
