"""The JSON report (schema cnndsl.check/1, README "JSON schema") of every architectures/*.arch,
checked by structure and against outside truth instead of a golden file: documented fields and
types, names, inputs, source positions, sums, the text report's totals; per layer, the torch
module's parameters and shapes, torch's FLOP counter, and receptive fields by the recurrence of
Araujo et al. (Distill 2019) written out here, independently of cnndsl/passes/rf.py."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnndsl
from cnndsl.backends.torch_module import CompiledNetwork
from cnndsl.ir.joins import PartialConv, Subsample
from cnndsl.ir.ops import Conv, GlobalPool, Linear, Pool
from conftest import ROOT, run_cli
from test_torch_backend import ARCHS, _torch_shape

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
COUNTS = ("params", "weights", "biases", "activations", "macs", "flops", "other_ops")
LAYER_FIELDS = {"name": str, "kind": str, "label": str, "line": int, "col": int, "used_at": list, "scope": list,
                "implicit": bool, "inputs": list, "shape": list, "rf": dict, **dict.fromkeys(COUNTS, int)}
BLOCK_FIELDS = {"name": str, "line": int, "repeats": int, "layers": list, "shape": list,
                **{k: int for k in COUNTS if k != "biases"}}
TOTALS = ("params", "weights", "biases", "activations", "activation_bytes", "macs", "flops", "other_ops")
KINDS = {"input", "conv", "pool", "global_pool", "linear", "flatten", "dropout", "batch_norm", "lrn", "activation",
         "maxout", "add", "concat", "resize", "shortcut", "partial_conv", "subsample"}
MATMUL_KINDS = {"conv", "linear", "partial_conv", "shortcut"}  # the MACs torch's flop counter sees
# words a layer written on its own line shows on that line
WORDS = {"pool": r"\bpool\b", "global_pool": r"\bpool\b", "linear": r"\bFC\b", "dropout": r"\bdropout\b",
         "lrn": r"\bLRN\b", "concat": r"\bconcat\b", "subsample": r"\bsubsample\b", "input": r"^input\b"}


@dataclass(frozen=True)
class Case:
    net: cnndsl.Network
    report: dict  # `cnndsl check FILE --json`, parsed
    text: str  # `cnndsl check FILE`
    lines: tuple[str, ...]  # the source file's lines


@dataclass(frozen=True)
class Measured:
    shapes: dict[str, tuple[int, ...]]  # layer name -> output shape in the report's order (spatial..., C)
    params: dict[str, tuple[int, int]]  # layer name -> (weights, biases) numel of its torch parameters
    flops: int  # torch.utils.flop_counter's total for one forward pass


def _cli(*args: str) -> str:
    result = run_cli(*args)
    assert result.code == 0 and result.err == "", result.err
    return result.out


@pytest.fixture(scope="module", params=ARCHS, ids=lambda p: p.stem)
def case(request) -> Case:
    path, rel = request.param, str(request.param.relative_to(ROOT))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # the report names the file as given
        report, text = json.loads(_cli("check", rel, "--json")), _cli("check", rel)
    return Case(cnndsl.load(path), report, text, tuple(path.read_text(encoding="utf-8").splitlines()))


def _owner(key: str, names: set[str]) -> str:
    """The layer a state-dict key belongs to: its longest dotted prefix that is a layer name."""
    parts = key.split(".")
    return next(".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1) if ".".join(parts[:n]) in names)


@pytest.fixture(scope="module")
def measured(case) -> Measured:
    """One forward pass of the torch backend's module on the meta device (shapes and FLOPs
    need no storage, so VGG19 costs nothing)."""
    net = case.net
    module = CompiledNetwork(net.graph, net.shapes, allocate=False).to_empty(device="meta").eval()
    names = [layer["name"] for layer in case.report["layers"]]
    params = dict.fromkeys(names, (0, 0))
    for key, p in module.named_parameters():
        owner = _owner(key, set(names))
        w, b = params[owner]
        params[owner] = (w, b + p.numel()) if key.endswith(".bias") else (w + p.numel(), b)
    seen: dict[int, tuple[int, ...]] = {}
    x = torch.empty(1, *_torch_shape(net.shapes[0]), device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x, lambda i, y: seen.setdefault(i, tuple(y.shape)))
    # node ids are the report's layer order (checked in test_layers_follow_the_graph); the
    # report writes a vector (FC's output, flattened by torch) as a 1x1 map
    rank = len(net.shapes[0].spatial)
    shapes = {names[i]: (*(s[2:] or (1,) * rank), s[1]) for i, s in seen.items()}
    return Measured(shapes, params, counter.get_total_flops())


# -- schema ----------------------------------------------------------------------------------

def _check_fields(entry: dict, fields: dict[str, type], where: str) -> None:
    assert set(fields) <= set(entry), f"{where}: missing {sorted(set(fields) - set(entry))}"
    for key, kind in fields.items():
        value = entry[key]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        assert ok, f"{where}: {key} = {value!r} is not {kind.__name__}"
        if kind is int and key not in ("line", "col"):
            assert value >= 0, f"{where}: {key} = {value} is negative"


def _is_shape(shape: list, rank: int) -> bool:
    return len(shape) == rank + 1 and all(type(n) is int and n > 0 for n in shape)


def test_top_level_fields(case):
    r = case.report
    assert r["schema"] == "cnndsl.check/1"
    assert f"network {r['network']}" in (line.split("#")[0].strip() for line in case.lines)
    assert r["source"] == str(Path("architectures") / Path(r["source"]).name) and r["source"].endswith(".arch")
    assert isinstance(r["batch"], int) and r["batch"] >= 1 and r["dtype"] in DTYPE_BYTES
    assert _is_shape(r["input"], len(r["input"]) - 1) and r["input"] == r["layers"][0]["shape"]
    assert isinstance(r["layers"], list) and r["layers"] and isinstance(r["blocks"], list)
    assert set(TOTALS) <= set(r["totals"]) and all(type(r["totals"][k]) is int for k in TOTALS)


def test_every_layer_has_the_documented_fields(case):
    rank = len(case.report["input"]) - 1
    for layer in case.report["layers"]:
        where = f"layer {layer.get('name')!r}"
        _check_fields(layer, LAYER_FIELDS, where)
        assert layer["kind"] in KINDS, where
        assert _is_shape(layer["shape"], rank), f"{where}: shape {layer['shape']}"
        assert all(isinstance(s, str) for s in layer["scope"] + layer["inputs"]), where
        assert all(type(n) is int and n >= 1 for n in layer["used_at"]), where
        rf = layer["rf"]
        assert set(rf) == {"size", "jump", "start"} and all(len(rf[k]) == rank for k in rf), where
        assert all(type(n) is int and n >= 1 for n in rf["size"]), where
        assert all(type(n) in (int, float) and n > 0 for n in rf["jump"]) and all(
            type(n) in (int, float) for n in rf["start"]), where


def test_every_block_has_the_documented_fields(case):
    rank = len(case.report["input"]) - 1
    for block in case.report["blocks"]:
        where = f"block {block.get('name')!r}"
        _check_fields(block, BLOCK_FIELDS, where)
        assert block["repeats"] >= 1 and block["layers"], where
        assert all(isinstance(n, str) for n in block["layers"]) and _is_shape(block["shape"], rank), where


def test_names_are_unique_and_inputs_come_first(case):
    seen: set[str] = set()
    for layer in case.report["layers"]:
        assert layer["name"] not in seen, f"layer name {layer['name']!r} is used twice"
        assert set(layer["inputs"]) <= seen, f"{layer['name']} reads {layer['inputs']}, not all before it"
        assert bool(layer["inputs"]) == (layer["kind"] != "input"), layer["name"]
        seen.add(layer["name"])
    for block in case.report["blocks"]:
        assert set(block["layers"]) <= seen, f"block {block['name']} lists unknown layers"


def test_layers_follow_the_graph(case):
    """The report lists every IR node, in order: node i is layer i (the torch checks rely on it)."""
    assert [n.name for n in case.net.graph.nodes] == [layer["name"] for layer in case.report["layers"]]
    assert [n.id for n in case.net.graph.nodes] == list(range(len(case.report["layers"])))


def test_positions_point_at_the_source(case):
    for layer, node in zip(case.report["layers"], case.net.graph.nodes):
        where = f"layer {layer['name']} at {layer['line']}:{layer['col']}"
        for line in layer["used_at"]:
            assert 1 <= line <= len(case.lines) and case.lines[line - 1].strip(), where
        assert 1 <= layer["line"] <= len(case.lines), where
        text = case.lines[layer["line"] - 1]
        assert 1 <= layer["col"] <= len(text) and not text[layer["col"] - 1].isspace(), f"{where}: {text!r}"
        code = text.split("#")[0][layer["col"] - 1:]
        word = WORDS.get(layer["kind"])
        if not layer["implicit"] and word:
            assert re.search(word, code, re.I), f"{where}: no {word!r} in {code!r}"
        kernel = getattr(node.op, "kernel", None)  # written out for convolutions, not for pools
        if not layer["implicit"] and kernel and layer["kind"] in ("conv", "partial_conv", "subsample"):
            assert "x".join(map(str, kernel)) in code, f"{where}: kernel not in {code!r}"
    for block in case.report["blocks"]:
        assert 1 <= block["line"] <= len(case.lines) and case.lines[block["line"] - 1].strip(), block["name"]


# -- sums --------------------------------------------------------------------------------------

def test_totals_are_the_sums_of_the_layers(case):
    r, layers = case.report, case.report["layers"]
    for layer in layers:
        assert layer["params"] == layer["weights"] + layer["biases"], layer["name"]
        assert layer["flops"] == 2 * layer["macs"], layer["name"]
    for key in COUNTS:
        assert r["totals"][key] == sum(layer[key] for layer in layers), key
    assert r["totals"]["flops"] == 2 * r["totals"]["macs"]
    assert r["totals"]["activation_bytes"] == r["totals"]["activations"] * DTYPE_BYTES[r["dtype"]] * r["batch"]


def test_blocks_are_the_sums_of_their_layers(case):
    by_name = {layer["name"]: layer for layer in case.report["layers"]}
    for block in case.report["blocks"]:
        members = [by_name[n] for n in block["layers"]]
        for key in BLOCK_FIELDS:
            if key in COUNTS:
                assert block[key] == sum(m[key] for m in members), f"block {block['name']}: {key}"
        assert block["shape"] == members[-1]["shape"], block["name"]
        assert all(m["scope"][:1] == [block["name"]] for m in members), block["name"]


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text, re.M)
    assert found, f"no {pattern!r} in the text report"
    return int(found.group(1).replace(",", ""))


def test_text_report_totals_equal_the_json(case):
    t, r = case.report["totals"], case.report
    n = r"([\d,]+)"
    assert _number(rf"^params\s+{n}", case.text) == t["params"]
    assert _number(rf"^params\s.*: weights {n}", case.text) == t["weights"]
    assert _number(rf"^params\s.*\+ biases {n}", case.text) == t["biases"]
    assert _number(rf"^activations\s+{n} elements", case.text) == t["activations"]
    assert _number(rf"^MACs\s+{n}", case.text) == t["macs"]
    assert _number(rf"^MACs\s.*FLOPs = 2 x MACs = {n}", case.text) == t["flops"]
    assert _number(rf"^other ops\s+{n}", case.text) == t["other_ops"]
    shape = "x".join(map(str, r["input"]))
    assert case.text.startswith(f"{r['network']} ({r['source']}): input {shape}, batch {r['batch']}, {r['dtype']}\n")


# -- outside truth: the torch module -----------------------------------------------------------

def test_shapes_equal_the_torch_forward(case, measured):
    for layer in case.report["layers"]:
        assert tuple(layer["shape"]) == measured.shapes[layer["name"]], layer["name"]


def test_parameters_equal_the_torch_module(case, measured):
    for layer in case.report["layers"]:
        assert (layer["weights"], layer["biases"]) == measured.params[layer["name"]], layer["name"]


def test_macs_equal_the_flop_counter(case, measured):
    """torch counts convolutions and matrix products; the one other kind with MACs is LeNet's
    subsampling, one coefficient multiply per output element."""
    layers = case.report["layers"]
    assert 2 * sum(layer["macs"] for layer in layers if layer["kind"] in MATMUL_KINDS) == measured.flops
    for layer in layers:
        if layer["kind"] == "subsample":
            assert layer["macs"] == layer["activations"], layer["name"]
        elif layer["kind"] not in MATMUL_KINDS:
            assert layer["macs"] == 0, layer["name"]


# -- outside truth: receptive fields of sequential networks --------------------------------------

def _window(op, spatial: list[int]) -> list[tuple[int, int, int]] | None:
    """(extent, stride, pad) per axis of the input window one output unit reads, from the
    layer's own attributes; None for a layer that reads one position."""
    match op:
        case Conv(transposed=False):
            return [((k - 1) * d + 1, s, p) for k, d, s, p in zip(op.kernel, op.dilation, op.stride, op.pad)]
        case Pool():
            return list(zip(op.kernel, op.stride, op.pad))
        case PartialConv():
            return [(k, 1, 0) for k in op.kernel]
        case Subsample():
            return [(k, k, 0) for k in op.kernel]
        case GlobalPool() | Linear():  # the whole map
            return [(n, 1, 0) for n in spatial]
    return None


def _chain(layers: list[dict]) -> list[dict]:
    """The layers up to the first join or transposed conv (whose field the recurrence of
    sliding windows does not describe): each reads the one before it."""
    ends = [i for i, (a, b) in enumerate(zip(layers, layers[1:]), 1)
            if b["inputs"] != [a["name"]] or b["label"].startswith("UPCONV")]
    return layers[:ends[0] if ends else len(layers)]


SEQUENTIAL = {"alexnet", "alexnet_torchvision", "lenet5", "mnist_convnet", "vgg11", "vgg16", "vgg19"}


def test_receptive_fields_follow_the_recurrence(case):
    """Along the chain from the input (the whole network when it is sequential; the stem
    otherwise, see test_torch_backend's measured fields for the branches)."""
    layers, nodes = case.report["layers"], case.net.graph.nodes
    chain = _chain(layers)
    assert (len(chain) == len(layers)) == (Path(case.report["source"]).stem in SEQUENTIAL)
    rank = len(layers[0]["shape"]) - 1
    size, jump, start = [1] * rank, [1] * rank, [0.0] * rank
    for prev, layer, node in zip([None, *chain], chain, nodes):
        window = _window(node.op, prev["shape"][:-1]) if prev else None
        for axis, (extent, stride, pad) in enumerate(window or ()):
            size[axis] += (extent - 1) * jump[axis]
            start[axis] += ((extent - 1) / 2 - pad) * jump[axis]
            jump[axis] *= stride
        assert layer["rf"] == {"size": size, "jump": jump, "start": start}, layer["name"]
