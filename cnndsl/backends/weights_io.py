"""Weights for a compiled network, from wherever they come: the shared numpy initialiser,
a state dict, a file, or a PyTorch module. All of them end as one dict of numpy arrays
keyed and ordered like `cnndsl.backends.params.param_specs`, checked key by key.

`.npz` and `.safetensors` are read without torch (safetensors is an optional dependency:
`pip install safetensors`); `.pt`/`.pth` imports torch lazily and loads with
`weights_only=True`, so a file cannot run code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cnndsl.backends.params import Lazy, ParamSpec, initial_values, param_specs


class WeightsError(ValueError):
    """Weights that do not fit the network, or a file that cannot be read."""


def resolve_weights(network, weights=None, seed: int = 0) -> dict[str, np.ndarray | Lazy]:
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
    return check_weights(specs, {key: _to_numpy(value) for key, value in weights.items()})


def check_weights(specs: list[ParamSpec], given: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`given` reordered by `specs`; `num_batches_tracked` may be absent (inference ignores it)."""
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        value = given.get(spec.key)
        if value is None:
            if spec.role == "num_batches_tracked":
                continue
            raise WeightsError(f"weights lack '{spec.key}' (shape {_dims(spec.shape)})")
        if tuple(value.shape) != spec.shape:
            raise WeightsError(f"'{spec.key}' has shape {_dims(value.shape)}, the network needs {_dims(spec.shape)}")
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
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise WeightsError("reading .safetensors needs the safetensors package: pip install safetensors") from None
        return load_file(str(path))
    return _read_torch(path)


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
