"""Weights for a compiled network, from wherever they come: the shared numpy initialiser,
a state dict, a file, or a PyTorch module. All of them end as one dict of numpy arrays
keyed and ordered like `cnndsl.backends.params.param_specs`, checked key by key.

`.npz` and `.safetensors` are read without torch (safetensors is an optional dependency:
`pip install safetensors`); `.pt`/`.pth` imports torch lazily and loads with
`weights_only=True`, so a file cannot run code.

Values: float16, float32 and float64 (and bfloat16 from torch) are accepted and rounded to
the model's float type (float32, or float16 with --fp16); a value that is NaN, infinite, or
beyond float32's range (float16's for a float16 tensor) is refused, naming the tensor and
the first bad index. Integer, boolean, complex, string and object arrays are refused
(`num_batches_tracked` excepted: it is an integer count, unused at inference). A file
that cannot be read (truncated, not the format its suffix says) is a WeightsError too.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cnndsl.backends.blocks import Lazy
from cnndsl.backends.params import ParamSpec, initial_values, param_specs


class WeightsError(ValueError):
    """Weights that do not fit the network, or a file that cannot be read."""


def resolve_weights(network, weights=None, seed: int = 0, fp16: bool = False) -> dict[str, np.ndarray | Lazy]:
    """The network's tensors, keyed like its state dict, in structural order.

    weights: None (the shared initialiser under `seed`, its drawn tensors Lazy), a mapping of arrays, a path to
    `.npz` / `.safetensors` / `.pt`, or a module with `state_dict()`. Raises WeightsError
    naming the first key that is missing, unexpected or of the wrong shape.
    """
    specs = param_specs(network.graph, network.shapes)
    if weights is None:
        return initial_values(network.graph, network.shapes, seed)
    if isinstance(weights, (str, Path)):
        weights = read_weights(Path(weights))
    elif hasattr(weights, "state_dict") and not isinstance(weights, Mapping):
        weights = weights.state_dict()
    return check_weights(specs, {key: _to_numpy(value) for key, value in weights.items()}, fp16)


def check_weights(specs: list[ParamSpec], given: Mapping[str, np.ndarray], fp16: bool = False) -> dict[str, np.ndarray]:
    """`given` reordered by `specs`; `num_batches_tracked` may be absent (inference ignores it).
    With `fp16` every value must fit float16 (65504 would round to infinity beyond)."""
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        value = given.get(spec.key)
        if value is None:
            if spec.role == "num_batches_tracked":
                continue
            raise WeightsError(f"weights lack '{spec.key}' (shape {_dims(spec.shape)})")
        if tuple(value.shape) != spec.shape:
            raise WeightsError(f"'{spec.key}' has shape {_dims(value.shape)}, the network needs {_dims(spec.shape)}")
        _check_values(spec, value, 2 if fp16 else 4)
        out[spec.key] = value
    known = {spec.key for spec in specs}
    extra = [key for key in given if key not in known]
    if extra:
        raise WeightsError(f"unexpected tensor '{extra[0]}' in the weights ({len(extra)} unexpected in all); "
                           "is this the state dict of another network?")
    return out


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """A state dict read from a file, by its suffix."""
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".safetensors", ".pt", ".pth"):
        raise WeightsError(f"{path}: weights must be .npz, .safetensors, .pt or .pth")
    if not path.is_file():
        raise WeightsError(f"no such weights file: {path}")
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise WeightsError("reading .safetensors needs the safetensors package: pip install safetensors") from None
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors' SafetensorError (a bad header), or numpy's on a bad dtype
            raise WeightsError(f"cannot read {path} as .safetensors: {exc}") from None
    return _read_torch(path)


_NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)  # truncated, corrupt, pickled


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as exc:
        raise WeightsError(f"cannot read {path} as .npz: {exc}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise WeightsError(f"{path} is a single .npy array, not an .npz archive of named arrays")
    with data:
        out = {}
        for key in data.files:
            try:
                out[key] = data[key]
            except _NPZ_ERRORS as exc:  # object arrays: "Object arrays cannot be loaded when allow_pickle=False"
                raise WeightsError(f"cannot read '{key}' from {path}: {exc}") from None
        return out


_LIMITS = {2: np.finfo(np.float16).max, 4: np.finfo(np.float32).max}
_CHUNK = 1 << 20


def _check_values(spec: ParamSpec, value: np.ndarray, itemsize: int = 4) -> None:
    """Refuse values that are not real numbers the model's float type can hold (see the module doc)."""
    kind = value.dtype.kind
    if kind in "iub" and spec.role == "num_batches_tracked":
        return
    if kind != "f":
        what = {"c": "complex numbers (their imaginary parts would be dropped)", "i": "integers", "u": "integers",
                "b": "booleans", "U": "strings", "S": "strings", "O": "Python objects"}.get(kind, "non-numbers")
        raise WeightsError(f"'{spec.key}' holds {what} ({value.dtype}); weights must be floating point "
                           "(float16, float32 or float64)")
    itemsize = min(itemsize, value.dtype.itemsize)  # the narrower of the file's type and the model's
    limit = _LIMITS[itemsize]
    flat = value.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK]
        if value.dtype.itemsize == itemsize:  # in range if finite (one cheap pass)
            bad = ~np.isfinite(chunk)
        else:  # a wider type (float64, or float32 into --fp16): must also fit the narrower one (NaN compares False)
            bad = ~(np.abs(chunk) <= limit)
        if bad.any():
            i = start + int(np.argmax(bad))
            raise WeightsError(f"'{spec.key}' holds {float(flat[i])!r} at flat index {i:,}: weights must be finite "
                               f"numbers within float{8 * itemsize}'s range")


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    import torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (pickle, zip, unsupported global)
        raise WeightsError(f"cannot load {path} as a state dict: {exc}") from None
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {key: _to_numpy(value) for key, value in state.items()}


def _to_numpy(value) -> np.ndarray:
    """numpy arrays as they are; torch tensors (duck-typed) detached, on the CPU, bf16 widened."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _dims(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"
