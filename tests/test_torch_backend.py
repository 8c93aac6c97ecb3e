"""The PyTorch backend against outside truth: the IR's shapes and counts against a real
forward pass and torch.utils.flop_counter, torchvision's models and outputs on the same
weights, receptive fields measured with gradients, and the generated source against the
in-memory module."""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnndsl
from cnndsl.backends.params import param_specs
from cnndsl.backends.torch_module import CompiledNetwork, load_by_order
from cnndsl.backends.torch_source import to_source
from cnndsl.ir.joins import PartialConv, Shortcut
from cnndsl.ir.ops import Activation, Conv, Linear
from cnndsl.ir.shape import Shape

ROOT = Path(__file__).resolve().parent.parent
ARCHS = sorted((ROOT / "architectures").glob("*.arch"))

# Small networks for what the corpus does not show, one feature at least once each.
FEATURES = {name: "\n".join(lines) for name, lines in {
    "conv3d": ("network C3D", "input 8x16x16x3", "3x3x3 conv, 8, stride 2", "batch norm, eps 0.001, momentum 0.3",
               "elu", "2x2x2 max pool", "global average pool", "FC 5"),
    "conv1d": ("network C1D", "input 40x12", "5 conv, 16, dilation 2, pad same", "leaky relu 0.2",
               "3 avg pool, stride 2, pad 1, ceil", "3 conv, 8, groups 4, bias off", "batch norm", "sigmoid",
               "global max pool", "flatten", "FC 3", "batch norm", "LRN 3, alpha 0.001, beta 0.75, k 1", "softmax"),
    "maxout_lrn": ("network MaxoutLRN", "input 12x12x6", "3x3 conv, 16, groups 2", "maxout 2",
                   "LRN 5, alpha 0.001, beta 0.75, k 2", "dropout 0.3", "flatten", "FC 20", "maxout 4", "tanh", "FC 2"),
    "zero_pad": ("network ZeroPad", "input 16x16x3", "conv = conv -> batch norm -> relu", "shortcut zero-pad",
                 "3x3 conv, 8", "s1: [3x3, 8; 3x3, 8], residual", "s2: [3x3, 16; 3x3, 16] x 2, residual, stride 2",
                 "global average pool", "FC 10"),
    "skips": ("network Skips", "input 20x20x2", "activation relu", "a: 3x3 conv, 4, pad valid",
              "b: 3x3 conv, 4, pad valid", "max pool", "up-conv 2x2, 4", "concat a, crop", "3x3 conv, 4, pad 2",
              "add b, pad", "add {", "  identity", "  3x3 conv, 4", "  [1x1 conv, 8; 3x3 conv, 4]", "}",
              "up-conv 3x3, 2, stride 2, pad 1"),
    # names that are no Python attribute (`class`, `0`), copies that read a skip: no nn.Sequential
    "names": ("network Names", "input 16x16x3", "activation relu", "class: 3x3 conv, 8",
              "lambda: [3x3 conv, 8; 3x3 conv, 8] x 2", "c: [3x3 conv, 8; concat class] x 2", "global average pool",
              "FC 3"),
}.items()}


def _example(shape: Shape, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, shape.channels, *shape.spatial, generator=torch.Generator().manual_seed(seed))


def _torch_shape(shape: Shape) -> tuple[int, ...]:
    return (shape.channels, *shape.spatial)


def _conv_fc_macs(net: cnndsl.Network) -> int:
    """MACs of the nodes torch's flop counter sees: convolutions (a projection shortcut's 1x1
    included, LeNet's C3 applied connection by connection) and FC. It does not count the
    coefficient multiply of LeNet's subsampling, which the IR's MACs include."""
    kinds = (Conv, Linear, PartialConv, Shortcut)
    return sum(c.macs for n, c in zip(net.graph.nodes, net.report.counts) if isinstance(n.op, kinds))


def _load(key: str, **kwargs) -> cnndsl.Network:
    if key in FEATURES:
        return cnndsl.loads(FEATURES[key], name=f"{key}.arch", **kwargs)
    return cnndsl.load(ROOT / "architectures" / f"{key}.arch", **kwargs)


REUSED = {"alexnet_torchvision", "vgg16", "resnet18", "resnet50", "googlenet", "lenet5", "text_cnn", *FEATURES}


@functools.lru_cache(maxsize=None)
def _compiled(key: str) -> tuple[cnndsl.Network, CompiledNetwork]:
    """A network and its module, built once for the tests that only read it."""
    net = _load(key)
    return net, net.to_torch(seed=0).eval()


# -- every file: shapes, parameters, FLOPs -------------------------------------------------

@pytest.mark.parametrize("key", [p.stem for p in ARCHS] + list(FEATURES))
def test_forward_matches_the_ir(key):
    if key in REUSED:
        net, module = _compiled(key)
    else:  # not kept: VGG19 alone holds 0.6 GB
        net = _load(key)
        module = net.to_torch(seed=0).eval()
    specs = param_specs(net.graph, net.shapes)
    state = module.state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == [(s.key, s.shape) for s in specs]
    assert sum(p.numel() for p in module.parameters()) == net.report.totals.params
    seen: dict[int, tuple[int, ...]] = {}
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        module(_example(net.shapes[0]), lambda i, y: seen.setdefault(i, tuple(y.shape)))
    for node in net.graph.nodes:
        assert seen[node.id] == (1, *_torch_shape(net.shapes[node.id])), node.name
    assert flops.get_total_flops() == 2 * _conv_fc_macs(net)


def test_seed_gives_the_shared_initialiser_weights():
    net = _load("zero_pad")
    a, b, c = net.to_torch(seed=3).state_dict(), net.to_torch(seed=3).state_dict(), net.to_torch(seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    w = a["conv1.weight"]  # Kaiming variance, fan_out = 8 * 3 * 3
    assert abs(w.std().item() - (2 / 72) ** 0.5) < 0.05 and torch.all(a["bn1.weight"] == 1)


def test_outputs_keep_values_an_inplace_relu_overwrites():
    net, module = _compiled("zero_pad")
    outs = module.outputs(_example(net.shapes[0], batch=2))
    bn = next(n.id for n in net.graph.nodes if n.name == "bn1")
    assert (outs[bn] < 0).any() and torch.equal(outs[bn + 1], outs[bn].clamp(min=0))


# -- torchvision: same weights, same outputs -----------------------------------------------

TORCHVISION = {
    "alexnet_torchvision": lambda: torchvision.models.alexnet(weights=None),
    "vgg16": lambda: torchvision.models.vgg16(weights=None),
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "googlenet": lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True,
                                                      transform_input=False),
}


def _logits(module: CompiledNetwork, net: cnndsl.Network, x: torch.Tensor) -> torch.Tensor:
    """The value before the final softmax (torchvision's models end in their last Linear)."""
    last = net.graph.nodes[net.graph.output]
    if not (isinstance(last.op, Activation) and last.op.fn == "softmax"):
        return module(x)
    seen = {}
    module(x, lambda i, y: seen.__setitem__(i, y) if i == last.inputs[0] else None)
    return seen[last.inputs[0]]


@pytest.mark.parametrize("key", TORCHVISION)
def test_torchvision_weights_give_torchvision_outputs(key):
    if not (ROOT / "architectures" / f"{key}.arch").exists():
        pytest.skip(f"architectures/{key}.arch is not written yet")
    torch.manual_seed(0)
    reference = TORCHVISION[key]().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # BN statistics away from 0 and 1, so that eps and the order of the four tensors matter
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    net, module = _compiled(key)
    load_by_order(module, reference.state_dict())
    x = _example(net.shapes[0])
    with torch.no_grad():
        ours, theirs = _logits(module, net, x), reference(x)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_load_by_order_names_the_first_mismatch():
    net, module = _compiled("zero_pad")
    other = cnndsl.loads(FEATURES["zero_pad"].replace("3x3 conv, 8\n", "3x3 conv, 6\n", 1)).to_torch()
    with pytest.raises(ValueError, match=r"entry 0 differs: ours 'conv1.weight' has shape \(8, 3, 3, 3\), "
                                         r"theirs 'conv1.weight' has shape \(6, 3, 3, 3\)"):
        load_by_order(module, other.state_dict())
    shorter = dict(list(module.state_dict().items())[:-1])
    with pytest.raises(ValueError, match=r"entries in ours, .* in theirs: entry \d+ \(ours\) 'fc1.bias'"):
        load_by_order(module, shorter)


# -- receptive fields measured with gradients ----------------------------------------------

class _Stop(Exception):
    pass


def _measured_field(net: cnndsl.Network, node_id: int) -> list[tuple[int, int]]:
    """The input pixels that reach the centre unit of node `node_id`'s map, per axis (first, last).

    With every weight positive (1/fan_in, biases 0), BN in eval with statistics 0 and 1, and
    a positive input, every pre-activation is positive: ReLUs pass gradients and nothing
    cancels, so an input pixel's gradient is a sum of positive products over the paths that
    join it to the unit: non-zero exactly on the receptive field. Max pools would send the
    gradient to one element per window, so they are replaced by average pools of the same
    window, stride, padding and rounding, which join every element of the window. Values
    stay near 1 and the smallest gradient (one path, the field's corner) near 9^-depth.
    """
    module = CompiledNetwork(net.graph, net.shapes, allocate=False).to_empty(device="cpu").eval()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                m.weight.fill_(1 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
    for name, m in list(module.named_modules()):
        if isinstance(m, nn.MaxPool2d):
            module.set_submodule(name, nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode))
    module.requires_grad_(False)
    x = torch.ones(1, *_torch_shape(net.shapes[0]), requires_grad=True)
    seen = {}

    def stop(i, y):
        if i == node_id:
            seen["y"] = y
            raise _Stop

    with pytest.raises(_Stop):
        module(x, stop)
    y = seen["y"]
    centre = tuple(n // 2 for n in y.shape[2:])
    y[(0, slice(None)) + centre].sum().backward()
    reached = x.grad[0].abs().sum(0) > 0
    axes = []
    for axis in range(reached.dim()):
        other = tuple(a for a in range(reached.dim()) if a != axis)
        hit = reached.any(dim=other) if other else reached
        where = hit.nonzero().flatten()
        axes.append((where.min().item(), where.max().item()))
    return axes


RF_CASES = {  # file, node, input size: large enough that the centre unit's field is inside the image
    "vgg16": ("relu13", 224),  # the last conv (with its ReLU): 196
    "resnet18": ("conv5_x.1.relu3", 448),  # before global pooling: 435
    "googlenet": ("inception3a.concat", 224),  # the first Inception block
}


@pytest.mark.parametrize("key", RF_CASES)
def test_receptive_field_measured_equals_the_ir(key):
    if not (ROOT / "architectures" / f"{key}.arch").exists():
        pytest.skip(f"architectures/{key}.arch is not written yet")
    name, size = RF_CASES[key]
    net = _load(key, input_shape=Shape(3, (size, size)))
    node = next(n for n in net.graph.nodes if n.name == name)
    rf, out = net.report.rfs[node.id], net.shapes[node.id]
    expected = []
    for n, start, jump, width in zip(out.spatial, rf.start, rf.jump, rf.size):
        first = start + (n // 2) * jump - (width - 1) / 2
        assert first == int(first)
        assert 0 <= first and first + width <= size, "the field must lie inside the image to be measured"
        expected.append((int(first), int(first) + width - 1))
    assert _measured_field(net, node.id) == expected


# -- generated source ----------------------------------------------------------------------

def _import(source: str, tmp_path: Path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"generated_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _network_class(source: str, module):
    names = re.findall(r"^class (\w+)\(nn\.Module\):", source, flags=re.M)
    return getattr(module, names[-1])


def _imports(source: str) -> list[str]:
    return [ast.unparse(n) for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("key", [p.stem for p in ARCHS] + list(FEATURES))
def test_generated_source_has_the_same_state_dict(key, tmp_path):
    net = _load(key)
    source = to_source(net)
    assert _imports(source) == ["import torch", "from torch import nn"]
    assert max(map(len, source.splitlines())) <= 120
    with torch.device("meta"):
        module = _network_class(source, _import(source, tmp_path, key))()
    specs = param_specs(net.graph, net.shapes)
    assert [(k, tuple(v.shape)) for k, v in module.state_dict().items()] == [(s.key, s.shape) for s in specs]


@pytest.mark.parametrize("key", ["vgg16", "resnet50", "googlenet", "lenet5", "text_cnn", *FEATURES])
def test_generated_source_computes_the_same(key, tmp_path):
    if not (ROOT / "architectures" / f"{key}.arch").exists() and key not in FEATURES:
        pytest.skip(f"architectures/{key}.arch is not written yet")
    net, ours = _compiled(key)
    source = to_source(net)
    # meta: no storage, no initialisation (VGG16 holds 138M weights); PartialConv's index
    # buffers are not in the state dict, so a network with it is built for real
    with torch.device("meta" if "PartialConv(" not in source else "cpu"):
        generated = _network_class(source, _import(source, tmp_path, key))()
    generated.load_state_dict(ours.state_dict(), assign=True)
    generated.eval()
    x = _example(net.shapes[0], batch=1 if key in TORCHVISION else 2, seed=5)
    with torch.no_grad():
        assert torch.equal(generated(x), ours(x))


def test_resnet50_source_reads_like_torchvision():
    if not (ROOT / "architectures" / "resnet50.arch").exists():
        pytest.skip("architectures/resnet50.arch is not written yet")
    source = to_source(_load("resnet50"))
    assert re.findall(r"^class (\w+)", source, flags=re.M) == ["Bottleneck", "ResNet50"]
    assert "def __init__(\n        self,\n        in_channels: int,\n        width: int,\n        out_channels: int," \
           "\n        stride: int = 1,\n        downsample: bool = False,\n    ) -> None:" in source
    assert "Bottleneck(256, 128, 512, stride=2, downsample=True),\n" \
           "            *(Bottleneck(512, 128, 512) for _ in range(3))," in source
    assert "        identity = x if self.downsample is None else self.downsample(x)\n" \
           "        out = out + identity\n        return self.relu(out)\n" in source
    assert len(source.splitlines()) < 120


# -- training ------------------------------------------------------------------------------

def test_one_sgd_step_lowers_the_loss():
    net = _load("mnist_convnet")
    module = net.to_torch(seed=0).train()
    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    before = nn.functional.cross_entropy(module(x), labels)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = nn.functional.cross_entropy(module(x), labels)
    assert after < before


# -- command line --------------------------------------------------------------------------

def test_compile_writes_importable_source(cli, tmp_path):
    out = tmp_path / "mnist.py"
    result = cli("compile", "architectures/mnist_convnet.arch", "-o", str(out))
    assert (result.code, result.out, result.err) == (0, "", "")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # as a plain open() would leave it
    source = out.read_text()
    assert source == to_source(_load("mnist_convnet"))
    assert _network_class(source, _import(source, tmp_path, "mnist"))()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_compile_to_source_does_not_import_torch(tmp_path):
    out = tmp_path / "resnet50.py"
    code = ("import sys; from cnndsl.cli import main; "
            f"rc = main(['compile', {str(ROOT / 'architectures' / 'resnet50.arch')!r}, '-o', {str(out)!r}]); "
            "print(rc, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.stdout.split() == ["0", "[]"], done.stdout + done.stderr
    assert out.read_text().startswith('"""ResNet50 in PyTorch, generated by cnndsl from resnet50.arch."""')


def test_compile_usage_errors(cli, tmp_path):
    arch = "architectures/mnist_convnet.arch"
    assert cli("compile", arch, "-o", str(tmp_path / "m.txt")).code == 2
    assert cli("compile", arch, "-o", str(tmp_path / "m.py"), "--seed", "1").code == 2
    assert cli("compile", arch, "-o", str(tmp_path / "missing" / "m.py")).code == 2
    result = cli("compile", arch, "--target", "torch", "-o", str(tmp_path / "m.txt"))
    assert result.code == 0 and (tmp_path / "m.txt").read_text().startswith('"""MnistConvNet')


def test_module_attribute_list_matches_torch():
    from cnndsl.backends.torch_names import MODULE_ATTRIBUTES
    names = set(dir(nn.Module)) | set(vars(nn.Module()))
    assert {n for n in names if not (n.startswith("__") and n.endswith("__"))} <= MODULE_ATTRIBUTES


def test_label_clashing_with_nn_module_is_a_located_error(tmp_path, cli):
    text = "input 8x8x3\nforward: 3x3 conv, 8\nFC 2\n"
    with pytest.raises(cnndsl.CnnDslError) as err:
        cnndsl.loads(text, name="clash.arch").to_torch()
    (d,) = err.value.diagnostics
    assert (d.span.line, d.span.col) == (2, 1) and "nn.Module attribute 'forward'" in d.message
    src = tmp_path / "clash.arch"
    src.write_text(text)
    res = cli("compile", str(src), "-o", str(tmp_path / "clash.py"))
    assert res.code == 1 and "clash.arch:2:1" in res.err and not (tmp_path / "clash.py").exists()
