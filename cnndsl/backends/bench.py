"""Timing a compiled network: PyTorch (eager, channels-last, bf16/fp16, torch.compile,
CUDA graphs) or onnxruntime (I/O binding), with the peak memory measured and predicted.

Each timed iteration is one forward pass of one batch, synchronised: on CUDA with events
around the pass, on the CPU with the wall clock. Nothing here prints; progress goes to a
callback so the CLI can show it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from cnndsl.backends.ort_run import Latencies
from cnndsl.passes.memory import estimate

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True, slots=True)
class Settings:
    backend: str = "torch"  # torch | onnxruntime
    device: str = "cuda"
    batch: int = 1
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    warmup: int = 10
    iterations: int = 50
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Result(Latencies):
    settings: Settings
    times_ms: tuple[float, ...]
    peak_bytes: int | None  # measured (torch.cuda.max_memory_allocated); None off CUDA
    predicted_bytes: int  # cnndsl's memory model, inference at this batch and dtype

    @property
    def batch(self) -> int:
        return self.settings.batch

    p50_ms = Latencies.median_ms  # the name `cnndsl bench` reports it by


def check_settings(s: Settings) -> None:
    """Refuse combinations that cannot run here, with a sentence saying why."""
    if s.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if s.cuda_graphs and s.device != "cuda":
        raise ValueError("--cuda-graphs needs --device cuda")
    if s.backend == "onnxruntime" and (s.compile or s.cuda_graphs or s.channels_last or s.dtype == "bf16"):
        raise ValueError("--compile, --cuda-graphs, --channels-last and bf16 apply to --backend torch")


def bench_torch(network, s: Settings, progress: Callable[[str], None] = lambda _: None) -> Result:
    """Time `network` compiled to PyTorch under the settings `s`."""
    check_settings(s)
    device, dtype = torch.device(s.device), DTYPES[s.dtype]
    fmt = torch.channels_last if s.channels_last else torch.contiguous_format
    model = network.to_torch(seed=s.seed).eval().to(device=device, dtype=dtype, memory_format=fmt)
    x = _input(network, s.batch, device, dtype, fmt, s.seed)
    run = torch.compile(model) if s.compile else model
    if s.compile:
        progress("compiling with torch.compile (this takes a while)")
    with torch.inference_mode():
        progress(f"warming up ({s.warmup} iterations)")
        for _ in range(max(1, s.warmup)):
            run(x)
        if s.cuda_graphs:
            progress("capturing a CUDA graph")
            run = capture_cuda_graph(run, x)
        _reset_peak(device)
        times = tuple(time_once(run, x, device) for _ in range(s.iterations))
    return Result(s, times, _peak(device), _predicted(network, s))


def bench_onnxruntime(network, s: Settings, progress: Callable[[str], None] = lambda _: None) -> Result:
    """Time `network` emitted to ONNX and run by onnxruntime with I/O binding."""
    from cnndsl.backends import ort_run
    from cnndsl.backends.onnx_emit import to_bytes
    check_settings(s)
    progress("emitting ONNX")
    model = to_bytes(network, seed=s.seed, fp16=s.dtype == "fp16", fold_bn=True)
    progress(f"warming up ({s.warmup} iterations)")
    timing = ort_run.run_model(model, "cuda" if s.device == "cuda" else "cpu", s.batch, s.seed, s.warmup, s.iterations)
    return Result(s, timing.times_ms, None, _predicted(network, s))


def _input(network, batch: int, device, dtype, fmt, seed: int) -> torch.Tensor:
    shape = network.shapes[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, shape.channels, *shape.spatial), generator=g)
    return x.to(device=device, dtype=dtype).contiguous(memory_format=fmt) if x.dim() == 4 else x.to(device, dtype)


def capture_cuda_graph(run, x: torch.Tensor) -> Callable:
    """Capture one forward pass of `run` on inputs like `x` in a CUDA graph; the returned
    function copies its input in and replays the graph, skipping Python and launch overhead."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            run(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = run(static_x)

    def replay(inp: torch.Tensor) -> torch.Tensor:
        static_x.copy_(inp)
        graph.replay()
        return static_y
    return replay


def time_once(run, x: torch.Tensor, device) -> float:
    """Milliseconds of one synchronised call `run(x)`: CUDA events on a GPU, the wall clock on a CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    run(x)
    return (time.perf_counter() - t0) * 1000.0


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device) -> int | None:
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else None


def _predicted(network, s: Settings) -> int:
    r = network.report
    return estimate(r.graph, r.shapes, r.counts, batch=s.batch, dtype=s.dtype).peak
