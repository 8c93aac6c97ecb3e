"""Issue 10's backend cases: random valid networks through every backend (the in-memory
module, the generated source, ONNX with onnxruntime), hostile names in generated source,
bounded memory when streaming huge weights, bad weights files, and the ONNX path's
start-up (no ml_dtypes)."""

from __future__ import annotations

import ast
import importlib.util
import re
import runpy
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import onnxruntime  # noqa: F401 (imported here, not inside the first timed example)
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl.backends.onnx_emit import to_bytes
from cnndsl.backends.ort_run import session
from cnndsl.backends.torch_source import docstring, to_source
from conftest import ROOT, examples

# -- random valid networks -----------------------------------------------------------------


@dataclass
class _State:
    """What the generator knows of the value it is at: rank, channels, side, labelled skips."""

    rank: int
    channels: int
    side: int
    labels: dict = field(default_factory=dict)  # label -> (channels, side, jump)
    count: int = 0
    jump: int = 1  # the product of the strides so far: a skip must come from the same jump

    def stride(self, s: int) -> None:
        self.side, self.jump = (self.side - 1) // s + 1, self.jump * s

    def skips(self) -> list:
        return sorted((k, v[:2]) for k, v in self.labels.items() if v[2] == self.jump)


def _k(state: _State, k: int) -> str:
    return "x".join([str(k)] * state.rank)


@st.composite
def _branch(draw, state: _State, out: int | None) -> tuple[str, int]:
    """One shape-keeping branch of concat/add; `out`: the channels it must give (add)."""
    width = out or draw(st.integers(1, 5))
    kinds = ["conv", "pair"] + (["identity", "relu", "norm"] if out in (None, state.channels) else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "identity":
        return "identity", state.channels
    if kind in ("relu", "norm"):
        return ("relu" if kind == "relu" else "batch norm"), state.channels
    k = draw(st.sampled_from([1, 3]))
    if kind == "conv":
        return f"{_k(state, k)} conv, {width}", width
    mid = draw(st.integers(1, 4))
    return f"[{_k(state, 1)} conv, {mid}; relu; {_k(state, k)} conv, {width}]", width


@st.composite
def _layer(draw, state: _State) -> str:
    """One line that keeps the network valid; updates `state`."""
    kinds = ["conv", "act", "concat", "add", "residual", "block"] + (["pool"] if state.side % 2 == 0 else [])
    kinds += ["skip"] if state.skips() else []
    kind = draw(st.sampled_from(kinds))
    label = ""
    if draw(st.integers(0, 3)) == 0:
        state.count += 1
        label = f"s{state.count}: "
    text = draw(_line(kind, state))
    if label:
        state.labels[label[:-2]] = (state.channels, state.side, state.jump)
    return label + text


@st.composite
def _line(draw, kind: str, state: _State) -> str:
    if kind == "conv":
        width, option = draw(st.integers(1, 6)), draw(st.sampled_from(["", "", ", stride 2", ", pad valid"]))
        option = "" if option == ", pad valid" and state.side < 3 else option
        state.channels = width
        state.stride(2 if option == ", stride 2" else 1)
        state.side -= 2 if option == ", pad valid" else 0
        return f"{_k(state, 3 if option == ', pad valid' else draw(st.sampled_from([1, 3])))} conv, {width}{option}"
    if kind == "act":
        return draw(st.sampled_from(["relu", "batch norm", "tanh", "leaky relu 0.1", "dropout 0.5", "sigmoid"]))
    if kind == "pool":
        state.side, state.jump = state.side // 2, state.jump * 2
        return f"{_k(state, 2)} {draw(st.sampled_from(['max', 'average']))} pool"
    if kind in ("concat", "add"):
        branches = draw(st.lists(_branch(state, None if kind == "concat" else state.channels), min_size=1,
                                 max_size=3))
        state.channels = sum(c for _, c in branches) if kind == "concat" else state.channels
        return kind + " {\n" + "\n".join("  " + b for b, _ in branches) + "\n}"
    if kind == "residual":
        width, times, stride = draw(st.integers(1, 5)), draw(st.integers(1, 2)), draw(st.sampled_from([1, 2]))
        state.channels = width
        state.stride(stride)
        return f"[{_k(state, 3)} conv, {width}; relu; {_k(state, 3)} conv, {width}] x {times}, residual" + \
            (", stride 2" if stride == 2 else "")
    if kind == "block":
        width, times = draw(st.integers(1, 5)), draw(st.integers(1, 2))
        state.channels = width
        return f"unit({width}) x {times}" + (", residual" if draw(st.booleans()) else "")
    name, (channels, side) = draw(st.sampled_from(state.skips()))
    fit = "" if side == state.side else ", crop" if side > state.side else ", pad"
    if channels == state.channels and draw(st.booleans()):
        return f"add {name}{fit}"
    state.channels += channels
    return f"concat {name}{fit}"


@st.composite
def networks(draw) -> str:
    """The text of a small valid network: convs, activations, pools, concat/add branches,
    residual groups, block uses, labelled skips (concat/add with crop or pad)."""
    rank = draw(st.sampled_from([2, 2, 2, 1, 3]))
    side = {1: 12, 2: 8, 3: 4}[rank]
    state = _State(rank, draw(st.integers(1, 3)), side)
    head = [f"input {'x'.join([str(side)] * rank)}x{state.channels}"]
    head += draw(st.lists(st.sampled_from(["activation relu", "conv = conv -> batch norm -> relu"]), max_size=2,
                          unique=True))
    head.append(f"block unit(n) {{\n  {_k(state, 3)} conv, n\n  relu\n}}")
    body = [draw(_layer(state)) for _ in range(draw(st.integers(1, 7)))]
    if draw(st.booleans()):
        body += ["global average pool", f"FC {draw(st.integers(1, 4))}"]
    return "\n".join(head + body) + "\n"


def _run_all(text: str) -> None:
    """Every backend on the network: equal shapes (the IR's) and equal outputs within 1e-4."""
    net = cnndsl.loads(text, name="random.arch")
    module = net.to_torch(seed=1).eval()
    _randomise(module)  # BN statistics too, so that folding them is put to the test
    x = torch.randn(2, net.shapes[0].channels, *net.shapes[0].spatial, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        values = module.outputs(x)
        for node, value, shape in zip(net.graph.nodes, values, net.shapes):
            assert tuple(value.shape[1:]) == (shape.channels, *shape.spatial), (node.name, text)
        want = module(x).numpy()
        generated = _import_root_class(to_source(net))()
        generated.load_state_dict(module.state_dict(), strict=True)
        got = generated.eval()(x).numpy()
    np.testing.assert_array_equal(got, want, err_msg=text)  # the same torch ops in the same order
    tol = 1e-4 * max(1.0, float(np.abs(want).max()))  # float32 rounding grows with the values' scale
    for fold_bn in (False, True):
        sess = session(to_bytes(net, weights=module, fold_bn=fold_bn))
        ort_out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        np.testing.assert_allclose(ort_out, want, atol=tol, rtol=1e-4, err_msg=text)


def _randomise(module: torch.nn.Module) -> None:
    """Biases, BN scales and statistics made non-trivial (the initialiser's are 0 and 1); kernels
    keep their Kaiming scale, so values stay of order 1 however deep the network."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
            elif value.is_floating_point() and value.dim() == 1:
                value.copy_(torch.randn(value.shape, generator=generator) * 0.5)


def _import_root_class(source: str) -> type:
    """The generated file imported as a module (from a temporary file); its network class, the last one."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random_net.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("random_net", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return getattr(module, re.findall(r"^class (\w+)\(nn\.Module\):", source, flags=re.M)[-1])


@pytest.mark.timeout(60 + 2 * examples(40))
@settings(max_examples=examples(40), deadline=timedelta(seconds=5))  # the profile's, but 5 s: 3 backends each
@given(networks())
def test_random_networks_agree_in_every_backend(text):
    _run_all(text)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("text", [
    "input 8x8x3\nconcat { relu }\nconcat { relu }\n",  # the case: scope `branch1` read its own output
    "input 8x8x3\nconcat {\n  3x3 conv, 2\n}\n3x3 conv, 4\nconcat {\n  1x1 conv, 3\n  identity\n}\nadd {\n  identity\n"
    "  3x3 conv, 7\n}\n",
    "input 8x8x2\nc: [3x3 conv, 2; concat { relu }] x 2\nconcat { relu }\nadd { relu }\nadd { relu }\n",
])
def test_reused_branch_names_compile_to_working_source(text):
    _run_all(text)


# -- 17: no input text reaches generated code unescaped ----------------------------------------

HOSTILE = ['x""";open("PWNED","w");"""y', "a\\", 'q"', "line\nopen('PWNED','w')#", "cr\ropen('PWNED','w')",
           "ls\u2028open('PWNED','w')", "nul\0z", "tab\t\\x\"\"\"", "é\udcff"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_names_stay_text(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = cnndsl.loads("input 8x8x3\n3x3 conv, 4\nconcat { relu }\n", name=f"{name}.arch")
    path = tmp_path / "generated.py"
    path.write_text(to_source(net), encoding="utf-8", errors="surrogateescape")
    namespace = runpy.run_path(str(path))  # as `import` would run it
    assert [p.name for p in tmp_path.iterdir()] == ["generated.py"]  # no PWNED
    assert namespace["__doc__"] == f"Network in PyTorch, generated by cnndsl from {name}.arch."
    assert tuple(namespace["Network"]()(torch.zeros(1, 3, 8, 8)).shape) == (1, 4, 8, 8)


def test_docstrings_escape_every_character_that_could_end_them():
    for text in HOSTILE + ['"', '""', '"""', "\\", "\\\\\"", "\x85\x0b\x0c\u2029"]:
        literal = docstring(text)
        tree = ast.parse(literal)
        assert len(tree.body) == 1 and ast.literal_eval(literal) == text
        assert "\n" not in literal and "\r" not in literal and "\u2028" not in literal


# -- 27: the ONNX path starts fast: no onnx.helper, no ml_dtypes -------------------------------

@pytest.mark.timeout(60)
def test_compiling_to_onnx_imports_neither_onnx_helper_nor_ml_dtypes(tmp_path):
    """ml_dtypes 0.7 costs 1.2 s to import (onnx.helper pulls it in); emission must not need it."""
    code = ("import sys, time; t = time.perf_counter(); from cnndsl.cli import main; "
            f"code = main(['compile', 'architectures/lenet5.arch', '-o', {str(tmp_path / 'l.onnx')!r}, '--fold-bn']); "
            "print(code, round(time.perf_counter() - t, 2), "
            "sorted(m for m in ('ml_dtypes', 'onnx', 'onnx.helper', 'onnx.numpy_helper', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=50)
    assert done.returncode == 0, done.stderr
    code, seconds, loaded = done.stdout.split(" ", 2)
    assert (code, loaded.strip()) == ("0", "[]"), done.stdout
    assert float(seconds) < 10  # generous: about 0.3 s on this project's 2-core machine
    import onnx  # the file is the same model onnx itself reads and checks
    onnx.checker.check_model(str(tmp_path / "l.onnx"), full_check=True)


def test_onnx_messages_are_made_as_onnx_helper_makes_them():
    from onnx import helper, numpy_helper

    from cnndsl.backends import onnx_proto
    attrs = dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], group=2, epsilon=1e-5, alpha=0.1,
                 axes=[2], keepdims=0, mode="constant")
    assert onnx_proto.node("Conv", ["x", "w"], ["y"], name="y", doc_string="a.arch:3", **attrs) == \
        helper.make_node("Conv", ["x", "w"], ["y"], name="y", doc_string="a.arch:3", **attrs)
    assert onnx_proto.value_info("y", 1, ["N", 3, 8]) == helper.make_tensor_value_info("y", 1, ["N", 3, 8])
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float16), np.arange(3, dtype=np.int64)):
        assert onnx_proto.tensor(array, "t") == numpy_helper.from_array(array, "t")
    graph = helper.make_graph([], "g", [], [])
    for opset in onnx_proto.IR_VERSIONS:
        ours = onnx_proto.model(graph, opset, producer_name="cnndsl", doc_string="d")
        theirs = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="cnndsl",
                                   doc_string="d", ir_version=helper.find_min_ir_version_for(
                                       [helper.make_opsetid("", opset)]))
        assert ours == theirs


# -- 13: streaming holds blocks in flight, not the weights, nor a list of every block ----------

@pytest.mark.timeout(60)
def test_streaming_a_huge_tensor_holds_only_the_blocks_in_flight():
    """A tensor of 2**40 elements (4 TB, 4.2 million blocks): the writer's first chunks come
    at once, in a few MB; the old stream built a list of every block's job first (0.5 GB)."""
    import tracemalloc

    from cnndsl.backends.blocks import BLOCK, Drawn, _workers, stream
    huge = Drawn((2 ** 40,), 0.1, seed=0, index=0)
    tracemalloc.start()
    try:
        chunks = stream([b"head", huge, b"tail"])
        sizes = [len(next(chunks)) for _ in range(6)]
        chunks.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sizes == [4] + [4 * BLOCK] * 5
    assert peak < (2 * _workers() + 4) * 4 * BLOCK + (1 << 20), f"{peak:,} bytes"


def test_a_row_longer_than_a_block_is_cut_and_scaled_by_its_rows():
    """An FC on a large map has rows of more than BLOCK elements: blocks stay at BLOCK, and
    folding (row scaling) crosses the row boundaries inside a block correctly."""
    from cnndsl.backends.blocks import BLOCK, Drawn, scale_rows
    weight = Drawn((3, BLOCK + 1000), 0.5, seed=1, index=2)
    assert weight.length == BLOCK and weight.nblocks == 4
    scale = np.array([2.0, -3.0, 0.5])
    folded = scale_rows(weight, scale).astype(np.float32)
    whole = np.asarray(weight)
    np.testing.assert_array_equal(np.asarray(folded), (whole * scale[:, None]).astype(np.float32))
    assert max(len(folded.block(k)) for k in range(folded.nblocks)) == BLOCK


# -- 16: bad --weights files are user errors (exit 2) naming the tensor -------------------------

def _lenet_weights() -> dict[str, np.ndarray]:
    from cnndsl.backends.params import init_params
    net = cnndsl.load(ROOT / "architectures" / "lenet5.arch")
    return init_params(net.graph, net.shapes, seed=0)


def _bad_weights(kind: str, path) -> str:
    """Write a bad weights file of `kind` at `path`; the key it spoils ('' for the whole file)."""
    good = _lenet_weights()
    key = next(iter(good))
    if kind == "truncated":
        np.savez(path, **good)
        path.write_bytes(path.read_bytes()[:3000])
        return ""
    if kind == "bad header":
        path.write_bytes((10 ** 6).to_bytes(8, "little") + b'{"a": ')
        return ""
    if kind == "not a zip":
        path.write_bytes(b"hello, I am not a zip archive")
        return ""
    spoiled = {"object": lambda a: a.astype(object), "string": lambda a: a.astype(str),
               "complex64": lambda a: a.astype(np.complex64) + 1j, "int32": lambda a: a.astype(np.int32),
               "NaN": lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, np.nan, a).astype(np.float32),
               "inf": lambda a: np.full(a.shape, np.inf, np.float32), "huge float64": lambda a: a.astype(np.float64) * 1e300}[kind]
    np.savez(path, **(good | {key: spoiled(good[key])}))
    return key


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["truncated", "not a zip", "object", "string", "complex64", "int32", "NaN", "inf",
                                  "huge float64", "bad header"])
def test_bad_weights_files_are_user_errors(kind, cli, tmp_path):
    path = tmp_path / ("w.safetensors" if kind == "bad header" else "w.npz")
    key = _bad_weights(kind, path)
    out = tmp_path / "l.onnx"
    result = cli("compile", "architectures/lenet5.arch", "-o", str(out), "--weights", str(path))
    assert result.code == 2, result.err
    assert "internal error" not in result.err and "Traceback" not in result.err
    assert (f"'{key}'" in result.err) if key else (str(path) in result.err), result.err
    assert not out.exists()


def test_float64_and_float16_weights_are_rounded_to_the_model_type(cli, tmp_path):
    """The documented conversion: float64 and float16 arrays are accepted and stored as float32."""
    good = _lenet_weights()
    np.savez(tmp_path / "w.npz", **{k: v.astype(np.float64) if i % 2 else v.astype(np.float16)
                                    for i, (k, v) in enumerate(good.items()) if v.dtype.kind == "f"})
    result = cli("compile", "architectures/lenet5.arch", "-o", str(tmp_path / "l.onnx"), "--weights",
                 str(tmp_path / "w.npz"))
    assert result.code == 0, result.err
    import onnx
    from onnx import numpy_helper
    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "l.onnx")).graph.initializer}
    for i, (k, v) in enumerate(good.items()):
        if k in stored:
            want = v.astype(np.float64 if i % 2 else np.float16).astype(np.float32)
            assert stored[k].dtype == np.float32 and np.array_equal(stored[k].ravel(), want.ravel()), k


# -- labels reach generated code as attribute names: none may break or rename a module ---------

@pytest.mark.parametrize("label", ["_modules", "_parameters", "__init__", "__dict__", "_version", "__class__"])
def test_labels_naming_nn_module_internals_are_located_errors(label):
    with pytest.raises(cnndsl.CnnDslError) as err:
        cnndsl.loads(f"input 8x8x3\n{label}: 3x3 conv, 4\nrelu\n", name="l.arch")
    (d,) = err.value.diagnostics
    assert (d.span.line, d.span.col) == (2, 1) and f"nn.Module attribute '{label}'" in d.message


def test_double_underscore_labels_are_not_name_mangled():
    """`self.__x` inside a class is `self._Network__x`: such names go through add_module/getattr."""
    text = "input 8x8x3\n__x: 3x3 conv, 4\nb: [__y: 3x3 conv, 4; relu; 3x3 conv, 2]\nconcat { relu }\nrelu\n"
    source = to_source(cnndsl.loads(text, name="u.arch"))
    assert "self.__" not in source
    _run_all(text)  # loads the module's state dict into the generated one, strict


def test_compile_of_a_hostile_file_name_writes_inert_source(cli, tmp_path, monkeypatch):
    arch = tmp_path / 'x""";open("PWNED","w");"""y.arch'
    arch.write_text("input 8x8x3\n3x3 conv, 4\n")
    assert cli("compile", str(arch), "-o", str(tmp_path / "out.py")).code == 0
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(tmp_path / "out.py"))
    assert not (tmp_path / "PWNED").exists() and arch.name in namespace["__doc__"]
