"""Part (b) of benchmarks/fuzz.py: one checked network through every backend, compared.

The PyTorch module (non-trivial batch-norm statistics and biases, as tests/test_onnx_backend.py
sets them) gives every node's value; each must have the IR's shape. The generated source,
imported, holds the same state dict and must compute the same output; the ONNX model emitted
with those weights must be the bytes `cnndsl compile` streams, pass onnx's full check, and
onnxruntime (CPU) must give every IR value it holds, and the output with batch norm folded,
within TOL of PyTorch's.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
import time
from pathlib import Path

TOL = 1e-4
BATCH = 2


class Mismatch(Exception):
    """Two backends, or a backend and the IR, disagree."""


class Refused(Exception):
    """The checker refused the network: not a finding, the generator overshot."""


def setup() -> None:
    """Import the backends once per worker, outside any timed input; one thread each."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import torch
    torch.set_num_threads(1)
    import cnndsl.backends.onnx_emit  # noqa: F401
    import cnndsl.backends.torch_module  # noqa: F401
    import cnndsl.backends.torch_source  # noqa: F401


def run(text: str, name: str, times: dict[str, float]) -> None:
    """Every backend on `text`; raises Refused, Mismatch, or whatever a backend raised. A
    CnnDslError from a backend (after the checker accepted the network) propagates too."""
    import cnndsl
    clock = time.perf_counter()
    try:
        net = cnndsl.loads(text, name=f"{name}.arch")
    except cnndsl.CnnDslError as exc:
        raise Refused(exc.diagnostics[0].message) from None
    times["check"] = times.get("check", 0) + time.perf_counter() - clock
    module, state, x, values = _stage(times, "torch", _torch, net)
    _stage(times, "source", _source, net, module, x, values[net.graph.output], name)
    _stage(times, "onnx", _onnx, net, state, x, values)


def _stage(times: dict[str, float], key: str, fn, *args):
    clock = time.perf_counter()
    try:
        return fn(*args)
    finally:
        times[key] = times.get(key, 0) + time.perf_counter() - clock


def _torch(net):
    import numpy as np
    import torch
    module = net.to_torch(seed=0).eval()
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    state.update(_perturbation(net))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    first = net.shapes[0]
    x = np.random.default_rng(1).standard_normal((BATCH, first.channels, *first.spatial), dtype=np.float32)
    with torch.no_grad():
        values = [t.numpy() for t in module.outputs(torch.from_numpy(x))]
    for node in net.graph.nodes:
        want = (BATCH, net.shapes[node.id].channels, *net.shapes[node.id].spatial)
        if values[node.id].shape != want:
            raise Mismatch(f"torch shape of {node.name}: {values[node.id].shape[1:]}, IR says {want[1:]}")
    return module, state, x, values


def _perturbation(net) -> dict:
    import numpy as np

    from cnndsl.backends.params import param_specs
    rng = np.random.default_rng(7)
    new = {}
    for spec in param_specs(net.graph, net.shapes):
        if spec.role in ("bn_weight", "running_var"):
            new[spec.key] = rng.uniform(0.5, 1.5, spec.shape).astype(np.float32)
        elif spec.role in ("bn_bias", "running_mean", "bias"):
            new[spec.key] = rng.normal(0, 0.1, spec.shape).astype(np.float32)
    return new


def _source(net, module, x, want, name: str) -> None:
    import torch

    from cnndsl.backends.torch_source import to_source
    source = to_source(net)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(f"fuzz_generated_{name}", path)
        generated = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generated)
    names = re.findall(r"^class (\w+)\(nn\.Module\):", source, flags=re.M)
    if not names:
        raise Mismatch("the generated source defines no nn.Module class")
    rebuilt = getattr(generated, names[-1])()
    rebuilt.load_state_dict(module.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        got = rebuilt(torch.from_numpy(x)).numpy()
    _close("generated source vs torch module", got, want)


def _onnx(net, state, x, values) -> None:
    import onnx

    from cnndsl.backends.onnx_emit import to_bytes
    model = net.to_onnx(weights=state)
    for streamed, whole in ((to_bytes(net, weights=state), model), (to_bytes(net, seed=3), net.to_onnx(seed=3))):
        if streamed != whole.SerializeToString():  # what `cnndsl compile` writes, chunk by chunk
            raise Mismatch("the streamed model (cnndsl compile) differs from to_onnx's")
    onnx.checker.check_model(model, full_check=True)
    by_name = {n.name: n.id for n in net.graph.nodes}
    wanted = [v for v in model.graph.value_info if v.name in by_name]
    model.graph.output.extend(wanted)
    names, results = _ort(model, x)
    for name, got in zip(names, results):
        node = by_name[name] if name in by_name else net.graph.output
        _close(f"onnxruntime {name} vs torch", got, values[node])
    folded = net.to_onnx(weights=state, fold_bn=True)
    onnx.checker.check_model(folded, full_check=True)
    _, (got,) = _ort(folded, x)
    _close("onnxruntime (folded batch norm) output vs torch", got, values[net.graph.output])


def _ort(model, x):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return names, sess.run(names, {sess.get_inputs()[0].name: x})


def _close(what: str, got, want) -> None:
    import numpy as np
    if got.shape != want.shape:
        raise Mismatch(f"{what}: shape {got.shape}, expected {want.shape}")
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    both_nan = np.isnan(got) & np.isnan(want)
    err = float(np.max(np.where(both_nan, 0.0, np.abs(got.astype(np.float64) - want)))) if want.size else 0.0
    if not err <= TOL * scale:  # `not <=`: a NaN is a mismatch too
        raise Mismatch(f"{what}: max |difference| {err:.3g} > {TOL:g} x {scale:.3g}")
