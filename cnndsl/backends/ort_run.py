"""Running an ONNX model with onnxruntime on random input, and timing it.

The CUDA provider (onnxruntime-gpu) is used only when asked for; a machine without it
gets ProviderUnavailable, not a silent fall-back to the CPU. Inputs and outputs are
bound to the provider's device once (I/O binding), so the timed runs measure the
model, not host-device copies.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class ProviderUnavailable(RuntimeError):
    """The asked-for execution provider is not available on this machine."""


class ModelError(RuntimeError):
    """onnxruntime cannot load the model (not an ONNX file, or one it does not support)."""


class Latencies:
    """Statistics over per-run wall times: a mixin for a frozen dataclass that has
    `times_ms` (one entry per timed run) and `batch` (images per run)."""

    __slots__ = ()
    times_ms: tuple[float, ...]
    batch: int

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p95_ms(self) -> float:
        """The 95th percentile (nearest rank)."""
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    @property
    def images_per_s(self) -> float:
        return self.batch * 1000.0 / self.median_ms


@dataclass(frozen=True, slots=True)
class Timing(Latencies):
    """What one `run_model` measured: output shape and per-run wall times in milliseconds."""

    provider: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    warmup: int
    times_ms: tuple[float, ...]

    @property
    def batch(self) -> int:
        return self.input_shape[0]


def session(model: bytes | str, provider: str = "cpu"):
    """An onnxruntime InferenceSession on `provider` ("cpu" or "cuda"), from a path or model bytes."""
    import onnxruntime as ort
    name = PROVIDERS[provider]
    if name not in ort.get_available_providers():
        raise ProviderUnavailable(
            f"onnxruntime has no {name} here (available: {', '.join(ort.get_available_providers())})"
            + ("; CUDA needs the onnxruntime-gpu package and an NVIDIA GPU" if provider == "cuda" else ""))
    options = [{"prefer_nhwc": "1"}] if provider == "cuda" else [{}]
    ort.set_default_logger_severity(4)  # its failures reach the user as our own one-line errors below
    try:
        sess = ort.InferenceSession(model, providers=[name], provider_options=options)
    except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...) are not public API
        what = model if isinstance(model, str) else "the model"
        raise ModelError(f"onnxruntime cannot load {what}: {str(exc).strip()}") from None
    if sess.get_providers()[0] != name:  # onnxruntime falls back quietly when the provider fails to load
        raise ProviderUnavailable(f"onnxruntime could not start {name} (it fell back to {sess.get_providers()[0]})"
                                  + ("; CUDA needs an NVIDIA GPU with CUDA 13 and cuDNN 9" if provider == "cuda" else ""))
    return sess


def random_input(sess, batch: int, seed: int = 0) -> np.ndarray:
    """Standard-normal input of the model's input shape, symbolic dimensions set to `batch`."""
    spec = sess.get_inputs()[0]
    shape = tuple(d if isinstance(d, int) else batch for d in spec.shape)
    dtype = _DTYPES.get(spec.type)
    if dtype is None:
        raise ModelError(f"input '{spec.name}' has type {spec.type}; cnndsl run feeds float inputs only")
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32).astype(dtype)


def run_model(model: bytes | str, provider: str = "cpu", batch: int = 1, seed: int = 0, warmup: int = 3,
              iterations: int = 10) -> Timing:
    """Run the model `warmup` times untimed, then `iterations` times timed, on one random batch."""
    import onnxruntime as ort
    sess = session(model, provider)
    x = random_input(sess, batch, seed)
    device = "cuda" if provider == "cuda" else "cpu"
    binding = sess.io_binding()
    binding.bind_ortvalue_input(sess.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x, device, 0))
    binding.bind_output(sess.get_outputs()[0].name, device)
    times = []
    for i in range(warmup + iterations):
        start = time.perf_counter()
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000.0)
    out = binding.get_outputs()[0]
    return Timing(sess.get_providers()[0], x.shape, tuple(out.shape()), warmup, tuple(times))
