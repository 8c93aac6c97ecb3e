"""The ONNX backend against outside truth: onnx's checker (full check) and strict shape
inference, onnxruntime against the PyTorch module on the same weights (every layer's
value, not only the output), byte-identical output, and no torch on the compile path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.backends import onnx_emit, ort_run
from cnndsl.backends.params import init_params, param_specs
from cnndsl.backends.weights_io import WeightsError
from cnndsl.cli import main
from cnndsl.ir.ops import BatchNorm, Conv
from cnndsl.ir.shape import Shape

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parent.parent
ARCHS = sorted((ROOT / "architectures").glob("*.arch"))

# Small networks for what the corpus does not show: 1D and 3D, dilation, groups, every
# activation, maxout, LRN off 2D, ceil pools whose last window PyTorch drops, zero-pad
# shortcuts, skips with crop and pad by odd amounts, flatten, a three-way add, up-conv with padding.
FEATURES = {
    "conv3d": """
        network C3D
        input 8x16x16x3
        3x3x3 conv, 8, stride 2
        batch norm
        elu
        2x2x2 max pool
        global average pool
        FC 5""",
    "conv1d": """
        network C1D
        input 40x12
        5 conv, 16, dilation 2, pad same
        leaky relu 0.2
        3 avg pool, stride 2, pad 1, ceil
        3 conv, 8, groups 4, bias off
        batch norm
        sigmoid
        global max pool
        flatten
        FC 3
        softmax""",
    "pools": """
        network Pools
        input 5x5x4
        activation tanh
        2x2 max pool, stride 2, pad 1, ceil    # (5 + 2 - 2)/2 + 1 -> 4, but the 4th would start in the padding
        3x3 conv, 8, pad 1
        2x2 avg pool, stride 2, pad 1, ceil
        FC 6""",
    "avg_ceil": """
        network AvgCeil
        input 11x9x2
        3x3 average pool, stride 2, pad 1, ceil
        3x3 max pool, stride 2, ceil
        FC 4""",
    "maxout_lrn": """
        network MaxoutLRN
        input 12x12x6
        3x3 conv, 16, groups 2
        maxout 2
        LRN 3, alpha 0.001, beta 0.75, k 1
        dropout 0.3
        FC 20
        maxout 4
        LRN 3
        FC 2""",
    "zero_pad": """
        network ZeroPad
        input 16x16x3
        conv = conv -> batch norm -> relu
        shortcut zero-pad
        3x3 conv, 8
        s1: [3x3, 8; 3x3, 8], residual
        s2: [3x3, 16; 3x3, 16], residual, stride 2
        global average pool
        FC 10""",
    "skips": """
        network Skips
        input 20x20x2
        activation relu
        a: 3x3 conv, 4, pad valid       # 18x18
        b: 2x2 conv, 4, pad valid       # 17x17
        concat a, crop                  # 18 -> 17
        2x2 conv, 4, pad 1              # 18x18
        add b, pad                      # 17 -> 18
        max pool
        up-conv 2x2, 4
        add {
          identity
          3x3 conv, 4
          [1x1 conv, 4; 3x3 conv, 4]
        }
        up-conv 3x3, 2, stride 2, pad 1""",
}


# Smaller inputs where the file's own size only makes the test slow: the same layers, but
# VGG's first FC shrinks from 103M weights to 2M. (VGG16 at full size: test_full_size_file.)
TEST_INPUT = {"vgg11": Shape(3, (32, 32)), "vgg16": Shape(3, (32, 32)), "vgg19": Shape(3, (32, 32)),
              "alexnet": Shape(3, (67, 67)), "alexnet_torchvision": Shape(3, (63, 63)), "unet": Shape(1, (188, 188))}


def _load(key: str) -> cnndsl.Network:
    if key in FEATURES:
        return cnndsl.loads(textwrap.dedent(FEATURES[key]).strip() + "\n", name=f"{key}.arch")
    return cnndsl.load(ROOT / "architectures" / f"{key}.arch", input_shape=TEST_INPUT.get(key))


KEYS = [p.stem for p in ARCHS] + list(FEATURES)


@pytest.fixture(scope="module", params=KEYS)
def compiled(request):
    """One network at a time (pytest groups tests by this fixture): the IR, weights like trained
    ones (the seed's, with batch norm statistics and biases made non-trivial), the PyTorch
    module and the ONNX model holding them, an input, and every node's value in PyTorch."""
    torch = pytest.importorskip("torch")
    net = _load(request.param)
    module = net.to_torch(seed=0).eval()
    state = {key: value.numpy() for key, value in module.state_dict().items()}
    state.update(_perturbation(net))
    module.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()})
    model = net.to_onnx(weights=module)
    x = np.random.default_rng(1).standard_normal((1, *_dims(net.shapes[0])), dtype=np.float32)
    with torch.no_grad():
        outputs = [t.numpy() for t in module.outputs(torch.from_numpy(x))]
    yield net, model, state, x, outputs


def _dims(shape) -> tuple[int, ...]:
    return (shape.channels, *shape.spatial)


def test_checker_and_shape_inference(compiled):
    net, model, *_ = compiled
    onnx.checker.check_model(model, full_check=True)
    declared = {v.name: _shape_of(v) for v in (*model.graph.value_info, *model.graph.output)}
    made = [out for node in model.graph.node for out in node.output]
    assert sorted(declared) == sorted(made)  # every value a node makes has a declared shape
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {v.name: _shape_of(v) for v in (*inferred.graph.value_info, *inferred.graph.output)}
    assert shapes == declared
    ir_values = 0
    for node in net.graph.nodes[1:]:
        if node.name in shapes:
            ir_values += 1
            assert shapes[node.name] == ("N", *_dims(net.shapes[node.id])), node.name
    assert model.graph.output[0].name == _value_of(net, model, net.graph.output)
    assert ir_values >= len([n for n in net.graph.nodes if isinstance(n.op, Conv)])


def _shape_of(value) -> tuple:
    return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)


def _value_of(net, model, node_id: int) -> str:
    """The ONNX value holding an IR node's output (dropouts and identities alias their input)."""
    names = {v.name for v in model.graph.value_info} | {model.graph.output[0].name}
    node = net.graph.nodes[node_id]
    return node.name if node.name in names else _value_of(net, model, node.inputs[0])


def test_onnxruntime_matches_torch(compiled):
    net, model, _, x, outputs = compiled
    _compare(net, model, x, outputs, tol=1e-4)


def test_onnxruntime_matches_torch_with_folded_bn(compiled):
    net, _, state, x, outputs = compiled  # without batch norm, folding must change nothing
    model = net.to_onnx(weights=state, fold_bn=True)
    users = net.graph.consumers()  # a BN folds into a conv that nothing else reads
    foldable = [isinstance(net.graph.nodes[n.inputs[0]].op, Conv) and users[n.inputs[0]] == [n.id]
                for n in net.graph.nodes if isinstance(n.op, BatchNorm)]
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == foldable.count(False)
    # a folded conv's value is its batch norm's output: compare from the BN on
    _compare(net, model, x, outputs, tol=1e-4, skip=set(onnx_emit.fold_pairs(net.graph)))


def test_same_seed_same_weights_as_torch():
    """The shared initialiser: a seed gives the PyTorch module and the ONNX model the same tensors."""
    net = _load("resnet18")
    assert net.to_onnx(seed=5).SerializeToString() == net.to_onnx(weights=net.to_torch(seed=5)).SerializeToString()
    assert net.to_onnx(seed=5).SerializeToString() != net.to_onnx(seed=6).SerializeToString()


@pytest.mark.parametrize("fold_bn, fp16", [(False, False), (True, False), (True, True)])
def test_streamed_weights_are_the_initialisers(fold_bn, fp16):
    """What `cnndsl compile` streams (drawn a block at a time into reused buffers, folded and cast
    block by block) is byte for byte the model built from the whole arrays the PyTorch backend
    gets; resnet18's larger tensors span several blocks (fc: 2, layer4's convs: 9)."""
    net = _load("resnet18")
    whole = init_params(net.graph, net.shapes, seed=5)
    reference = net.to_onnx(weights=whole, fold_bn=fold_bn, fp16=fp16).SerializeToString()
    assert onnx_emit.to_bytes(net, seed=5, fold_bn=fold_bn, fp16=fp16) == reference
    assert net.to_onnx(seed=5, fold_bn=fold_bn, fp16=fp16).SerializeToString() == reference
    given = {**whole, **_perturbation(net)}  # a weights file's arrays: folded and cast block by block
    assert onnx_emit.to_bytes(net, weights=given, fold_bn=fold_bn, fp16=fp16) == \
        net.to_onnx(weights=given, fold_bn=fold_bn, fp16=fp16).SerializeToString()


def test_failure_while_streaming_leaves_nothing(tmp_path, monkeypatch, capsys):
    """The weights are drawn while the file is written: a failure half-way (here the 20th block)
    is an internal error in one line, and neither the file nor a temp file is left."""
    from cnndsl.backends import params
    drawn = params.Drawn.fill
    calls = []

    def failing(self, k, out):
        calls.append(k)
        if len(calls) == 20:
            raise MemoryError("out of memory")
        drawn(self, k, out)

    monkeypatch.setattr(params.Drawn, "fill", failing)
    out = tmp_path / "r.onnx"
    assert main(["compile", str(ROOT / "architectures" / "resnet18.arch"), "-o", str(out)]) == 3
    assert "internal error: MemoryError: out of memory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_initialiser_variances():
    """Uniform draws with torchvision's variances: Kaiming (2 / fan_out) for convs, 0.01 ** 2 for FC."""
    net = _load("vgg11")
    values = init_params(net.graph, net.shapes, seed=0)
    conv, fc = values["conv3.weight"], values["fc3.weight"]  # 256x128x3x3, 1000x4096
    assert abs(conv.std() / (2 / (256 * 9)) ** 0.5 - 1) < 0.01 and abs(fc.std() / 0.01 - 1) < 0.01
    bound = (3 * 2 / (256 * 9)) ** 0.5
    assert -bound <= conv.min() and conv.max() < bound and conv.min() < -0.99 * bound


def _perturbation(net) -> dict[str, np.ndarray]:
    """New values for what the initialiser leaves trivial: BN scale, shift and statistics, biases."""
    rng = np.random.default_rng(7)
    new = {}
    for spec in param_specs(net.graph, net.shapes):
        match spec.role:
            case "bn_weight" | "running_var":
                new[spec.key] = rng.uniform(0.5, 1.5, spec.shape).astype(np.float32)
            case "bn_bias" | "running_mean" | "bias":
                new[spec.key] = rng.normal(0, 0.1, spec.shape).astype(np.float32)
    return new


def _compare(net, model, x, torch_outputs, tol: float, skip: set[int] = frozenset()) -> None:
    """Every IR value the model holds (but those of the nodes in `skip`), computed by onnxruntime
    (CPU), against PyTorch's: max |ort - torch| <= tol * max(1, max |torch|)."""
    by_name = {n.name: n.id for n in net.graph.nodes}
    wanted = [v for v in model.graph.value_info if by_name.get(v.name, -1) not in (-1, *skip)]
    model.graph.output.extend(wanted)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    finally:
        del model.graph.output[1:]
    names = [o.name for o in sess.get_outputs()]
    results = sess.run(names, {sess.get_inputs()[0].name: x})
    assert len(results) > 1
    for name, got in zip(names, results):
        want = torch_outputs[by_name[name]] if name in by_name else torch_outputs[net.graph.output]
        assert got.shape == want.shape, name
        err = float(np.max(np.abs(got - want)))
        assert err <= tol * max(1.0, float(np.max(np.abs(want)))), f"{name}: max error {err:.3g}"


def test_node_names_and_source_lines():
    net = cnndsl.load(ROOT / "architectures" / "resnet18.arch")
    model = net.to_onnx()
    nodes = {n.name: n for n in model.graph.node}
    line = next(i for i, text in enumerate(net.source.text.splitlines(), 1) if text.startswith("conv3_x"))
    assert nodes["conv3_x.0.conv1"].doc_string == f"resnet18.arch:{line}"
    assert nodes["conv3_x.0.conv1"].output == ["conv3_x.0.conv1"]
    assert nodes["conv3_x.0.downsample/0"].op_type == "Conv"  # projection: conv + BN, as torchvision's downsample
    assert nodes["conv3_x.0.downsample/0"].input[1] == "conv3_x.0.downsample.0.weight"
    assert nodes["conv3_x.0.downsample"].op_type == "BatchNormalization"
    assert "conv2_x.0.downsample" not in nodes  # identity shortcut: no node
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert model.opset_import[0].version == onnx_emit.DEFAULT_OPSET
    assert [i.name for i in model.graph.initializer][:2] == ["conv1.weight", "bn1.weight"]
    folded = net.to_onnx(fold_bn=True)
    assert sum(n.op_type == "Conv" for n in folded.graph.node) == sum(n.op_type == "Conv" for n in model.graph.node)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)


def test_block_uses_in_doc_strings():
    net = cnndsl.loads("network B\ninput 8x8x3\nblock two(w) {\n  3x3 conv, w\n  relu\n}\ntwo(4)\ntwo(8)\n", "b.arch")
    docs = [n.doc_string for n in net.to_onnx().graph.node]
    assert docs[0] == "b.arch:4 (in a block used at b.arch:7)"
    assert docs[-1] == "b.arch:5 (in a block used at b.arch:8)"


def test_newer_opset():
    net = _load("maxout_lrn")
    model = net.to_onnx(opset=18)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ones((2, 6, 12, 12), np.float32)
    ref = ort.InferenceSession(net.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref.run(None, {"input": x})[0], rtol=1e-6)
    for bad in (16, onnx.defs.onnx_opset_version() + 1):
        with pytest.raises(ValueError, match=f"opset {bad}"):
            net.to_onnx(opset=bad)


def test_even_lrn_is_refused_by_the_checker_naming_the_line():
    """ONNX has no exact even LRN, so check refuses it: it accepts only what every backend runs."""
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.loads("network L\ninput 8x8x6\n3x3 conv, 8\nLRN 4\nLRN 3\nLRN 2\n", "lrn.arch")
    lines = [d.span.line for d in info.value.diagnostics]
    assert lines == [4, 6]  # every such layer reported, at once
    assert "LRN 4 has no centre channel" in info.value.render()
    assert "lrn.arch:4:1" in info.value.render()


def test_fp16_runs_close_to_fp32():
    net = _load("resnet18")
    half = net.to_onnx(fp16=True)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert {t.data_type for t in half.graph.initializer if t.data_type != onnx.TensorProto.INT64} == \
        {onnx.TensorProto.FLOAT16}
    logits = net.graph.nodes[net.graph.nodes[net.graph.output].inputs[0]].name  # before the softmax
    got = _run_values(half, [logits], np.float16)
    want = _run_values(net.to_onnx(), [logits], np.float32)
    err = np.max(np.abs(got[0].astype(np.float32) - want[0]))
    assert err <= 1e-2 * np.max(np.abs(want[0])), err


def _run_values(model, names: list[str], dtype) -> list[np.ndarray]:
    model.graph.output.extend(v for v in model.graph.value_info if v.name in names)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32).astype(dtype)
    return sess.run(names, {"input": x})


# -- weights -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lenet():
    net = _load("lenet5")
    return net, _perturbed_all(net)


def _perturbed_all(net) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in init_params(net.graph, net.shapes, 0).items()}


def test_weights_from_files_and_modules(lenet, tmp_path):
    torch = pytest.importorskip("torch")
    net, state = lenet
    reference = net.to_onnx(weights=state).SerializeToString()
    assert reference != net.to_onnx(seed=0).SerializeToString()
    np.savez(tmp_path / "w.npz", **state)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "w.pt")
    module = net.to_torch()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    sources = [tmp_path / "w.npz", str(tmp_path / "w.pt"), module, module.state_dict()]
    try:
        from safetensors.numpy import save_file
        save_file(state, str(tmp_path / "w.safetensors"))
        sources.append(tmp_path / "w.safetensors")
    except ImportError:
        pass
    for source in sources:
        assert net.to_onnx(weights=source).SerializeToString() == reference, source


def test_weights_mismatch_names_the_first_key(lenet):
    net, state = lenet
    missing = {k: v for k, v in state.items() if k != "C3.bias"}
    with pytest.raises(WeightsError, match="lack 'C3.bias'"):
        net.to_onnx(weights=missing)
    wrong = dict(state, **{"C3.weight": np.zeros((60, 5, 4), np.float32)})
    with pytest.raises(WeightsError, match=r"'C3.weight' has shape \(60, 5, 4\), the network needs \(60, 5, 5\)"):
        net.to_onnx(weights=wrong)
    with pytest.raises(WeightsError, match="unexpected tensor 'fc9.weight'"):
        net.to_onnx(weights=dict(state, **{"fc9.weight": np.zeros(3, np.float32)}))
    with pytest.raises(WeightsError, match="must be .npz"):
        net.to_onnx(weights="w.bin")


def test_partial_conv_holds_the_table_as_zeros(lenet):
    net, state = lenet
    model = net.to_onnx(weights=state)
    full = next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "C3.weight_full")
    assert full.shape == (16, 6, 5, 5)
    assert np.count_nonzero(np.abs(full).sum(axis=(2, 3))) == 60  # Table I's 60 connections
    assert np.array_equal(full[0, 2], state["C3.weight"][2]) and not full[0, 3].any()


# -- the command line ----------------------------------------------------------------------

def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "cnndsl", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_compile_is_deterministic_and_streams_the_same_bytes(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    arch = str(ROOT / "architectures" / "googlenet.arch")
    assert _cli("compile", arch, "-o", str(a), "--seed", "3", env_extra={"PYTHONHASHSEED": "1"}).returncode == 0
    assert _cli("compile", arch, "-o", str(b), "--seed", "3", env_extra={"PYTHONHASHSEED": "2"}).returncode == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() == cnndsl.load(arch).to_onnx(seed=3).SerializeToString()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # no temp files left behind


def test_full_size_file(tmp_path):
    """VGG16 at 224x224 as a deployment compiles it: a 0.5 GB file, written in chunks, that the
    checker (full check: strict shape inference against the declared shapes) and onnxruntime take."""
    path = tmp_path / "vgg16.onnx"
    assert main(["compile", str(ROOT / "architectures" / "vgg16.arch"), "-o", str(path)]) == 0
    assert path.stat().st_size > 138_357_544 * 4
    onnx.checker.check_model(str(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": np.ones((2, 3, 224, 224), np.float32)})[0]
    assert y.shape == (2, 1000) and np.allclose(y.sum(axis=1), 1, atol=1e-5)


def test_compile_options_and_no_torch(tmp_path, lenet):
    """`cnndsl compile` to ONNX, with every option and a weights file, never imports torch."""
    net, state = lenet
    np.savez(tmp_path / "w.npz", **state)
    out = tmp_path / "l.onnx"
    code = ("import sys; from cnndsl.cli import main; "
            f"rc = main(['compile', {str(ROOT / 'architectures' / 'lenet5.arch')!r}, '-o', {str(out)!r}, "
            f"'--weights', {str(tmp_path / 'w.npz')!r}, '--fp16', '--fold-bn', '--opset', '18']); "
            "print(rc, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.stdout.split() == ["0", "[]"], done.stdout + done.stderr
    assert out.read_bytes() == net.to_onnx(weights=state, fp16=True, fold_bn=True, opset=18).SerializeToString()


def test_compile_errors(tmp_path, capsys):
    arch = str(ROOT / "architectures" / "lenet5.arch")
    assert main(["compile", arch, "-o", str(tmp_path / "x.onnx"), "--weights", str(tmp_path / "none.npz")]) == 2
    assert "no such weights file" in capsys.readouterr().err
    assert main(["compile", arch, "-o", str(tmp_path / "x.onnx"), "--opset", "12"]) == 2
    assert "opset 12" in capsys.readouterr().err
    bad = tmp_path / "lrn.arch"
    bad.write_text("network L\ninput 8x8x6\nLRN 4\n")
    assert main(["compile", str(bad), "-o", str(tmp_path / "y.onnx")]) == 1
    assert "lrn.arch:3:1: error: LRN 4 has no centre channel" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


def test_run_prints_shape_and_timing(tmp_path, capsys):
    arch = str(ROOT / "architectures" / "lenet5.arch")
    assert main(["run", arch, "--batch", "3", "--iterations", "4"]) == 0
    out = capsys.readouterr().out
    assert "output 3x10" in out and "median" in out and "p95" in out and "images/s" in out
    model = tmp_path / "l.onnx"
    assert main(["compile", arch, "-o", str(model), "--fp16"]) == 0
    capsys.readouterr()
    assert main(["run", str(model), "--provider", "cpu"]) == 0
    assert "output 1x10" in capsys.readouterr().out


def test_run_without_cuda_is_a_clear_error(capsys):
    # onnxruntime-gpu lists its CUDA provider even where it cannot start: only a GPU makes this moot
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert main(["run", str(ROOT / "architectures" / "lenet5.arch"), "--provider", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDAExecutionProvider" in err and "Traceback" not in err


def test_timing_statistics():
    t = ort_run.Timing("CPUExecutionProvider", (4, 3, 8, 8), (4, 10), 1, tuple(float(i) for i in range(1, 21)))
    assert t.median_ms == 10.5 and t.p95_ms == 19.0 and t.images_per_s == pytest.approx(4000 / 10.5)


# -- the GPU -------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["resnet50", "vgg16"])
def test_cuda_matches_torch_cuda(key):
    """onnxruntime's CUDA provider against PyTorch on CUDA: fp32 within 1e-3, fp16 within 1e-2,
    relative to the largest logit (TF32 off on both sides)."""
    torch = pytest.importorskip("torch")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (needs onnxruntime-gpu and a GPU)")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    net = _load(key)
    logits = net.graph.nodes[net.graph.nodes[net.graph.output].inputs[0]].name
    module = net.to_torch(seed=0).eval().cuda()
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    for fp16, tol in ((False, 1e-3), (True, 1e-2)):
        dtype = np.float16 if fp16 else np.float32
        mod = module.half() if fp16 else module
        with torch.no_grad():
            want = mod.outputs(torch.from_numpy(x.astype(dtype)).cuda())
        want = want[next(n.id for n in net.graph.nodes if n.name == logits)].float().cpu().numpy()
        model = net.to_onnx(seed=0, fp16=fp16)
        model.graph.output.extend(v for v in model.graph.value_info if v.name == logits)
        sess = ort.InferenceSession(model.SerializeToString(), providers=[("CUDAExecutionProvider", {"use_tf32": 0})])
        got = sess.run([logits], {"input": x.astype(dtype)})[0].astype(np.float32)
        err = float(np.max(np.abs(got - want)))
        assert err <= tol * float(np.max(np.abs(want))), f"{key} fp16={fp16}: {err:.3g}"
