"""The numbers that must hold: DESIGN.md's table, torchvision's models (parameter
counts, and torch.utils.flop_counter's FLOPs = 2 x MACs), the VGG16 slide row by row
(seed 001), the paper AlexNet, and receptive fields."""

from __future__ import annotations

from pathlib import Path

import pytest

import cnndsl
from cnndsl.ir.shape import Shape

ARCH = Path(__file__).resolve().parent.parent / "architectures"

# DESIGN.md, "Numbers that must hold": params (torchvision), MACs at 224 (= FlopCounter / 2).
DESIGN_TABLE = {
    "vgg11": ("vgg11", 132_863_336, 7_609_090_048),
    "vgg16": ("vgg16", 138_357_544, 15_470_264_320),
    "vgg19": ("vgg19", 143_667_240, 19_632_062_464),
    "alexnet_torchvision": ("alexnet", 61_100_840, 714_188_480),
}


def _torchvision_model(name: str):
    """A torchvision model on the meta device: real shapes, no memory, no init time."""
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("torchvision.models")
    with torch.device("meta"):
        return getattr(models, name)(weights=None)


def _flop_count(model, shape=(1, 3, 224, 224)) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(shape, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("arch", sorted(DESIGN_TABLE))
def test_design_table(arch):
    _, params, macs = DESIGN_TABLE[arch]
    totals = cnndsl.load(ARCH / f"{arch}.arch").report.totals
    assert totals.params == params
    assert totals.macs == macs


@pytest.mark.parametrize("arch", sorted(DESIGN_TABLE))
def test_against_torchvision(arch):
    tv_name, _, _ = DESIGN_TABLE[arch]
    model = _torchvision_model(tv_name)
    report = cnndsl.load(ARCH / f"{arch}.arch").report
    assert report.totals.params == sum(p.numel() for p in model.parameters())
    assert 2 * report.totals.macs == _flop_count(model)


@pytest.mark.parametrize("arch", sorted(DESIGN_TABLE))
def test_weighted_layers_match_torchvision_in_order(arch):
    """Layer by layer: each conv/FC's weights and biases equal torchvision's, in structural order."""
    import torch.nn as nn

    model = _torchvision_model(DESIGN_TABLE[arch][0])
    theirs = [(m.weight.numel(), m.bias.numel()) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    layers = cnndsl.load(ARCH / f"{arch}.arch").report.to_json()["layers"]
    ours = [(l["weights"], l["biases"]) for l in layers if l["kind"] in ("conv", "linear")]
    assert ours == theirs


def test_mnist_convnet_matches_seed_pytorch_code():
    """Seed 003's ConvNet, written out in PyTorch as the seed does: same params, FLOPs, and 7x7x32."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    def layer(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=5, stride=1, padding=2), nn.BatchNorm2d(cout),
                             nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=2))

    with torch.device("meta"):
        features = nn.Sequential(layer(1, 16), layer(16, 32))
        fc = nn.Linear(7 * 7 * 32, 10)
        seed = nn.Sequential(features, nn.Flatten(), fc).eval()
        out = features(torch.zeros(1, 1, 28, 28))
    report = cnndsl.load(ARCH / "mnist_convnet.arch").report
    layers = report.to_json()["layers"]
    assert tuple(out.shape[1:]) == (32, 7, 7)
    assert [l["shape"] for l in layers if l["kind"] == "pool"][-1] == [7, 7, 32]
    assert report.totals.params == sum(p.numel() for p in seed.parameters())
    assert 2 * report.totals.macs == _flop_count(seed, (1, 1, 28, 28))


# -- the paper's AlexNet ------------------------------------------------------------------

def test_paper_alexnet_params_at_227():
    report = cnndsl.load(ARCH / "alexnet.arch").report
    assert report.shapes[0] == Shape(3, (227, 227))
    assert report.totals.params == 60_965_224


def test_paper_alexnet_does_not_fit_224():
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.load(ARCH / "alexnet.arch", input_shape=Shape(3, (224, 224)))
    (diag,) = info.value.diagnostics
    first_conv = _first_line_starting(ARCH / "alexnet.arch", "11x11 conv")
    assert (diag.span.line, diag.span.col) == (first_conv, 1)
    assert "(224 - 11)/4 + 1 = 54.25" in diag.message
    assert "doesn't fit" in diag.message


def test_paper_alexnet_does_not_fit_224_cli(capsys):
    from cnndsl.cli import main

    path = ARCH / "alexnet.arch"
    assert main(["check", str(path), "--input", "224x224x3"]) == 1
    err = capsys.readouterr().err
    assert f"alexnet.arch:{_first_line_starting(path, '11x11 conv')}:1: error:" in err
    assert "(224 - 11)/4 + 1 = 54.25" in err


def _first_line_starting(path: Path, prefix: str) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.startswith(prefix))


# -- VGG16, the slide (seed 001) row by row ---------------------------------------------

# (row, shape HxWxC, memory elements, params without biases), transcribed from the slide.
VGG16_SLIDE = [
    ("INPUT", (224, 224, 3), 224 * 224 * 3, 0),
    ("CONV3-64", (224, 224, 64), 224 * 224 * 64, (3 * 3 * 3) * 64),
    ("CONV3-64", (224, 224, 64), 224 * 224 * 64, (3 * 3 * 64) * 64),
    ("POOL2", (112, 112, 64), 112 * 112 * 64, 0),
    ("CONV3-128", (112, 112, 128), 112 * 112 * 128, (3 * 3 * 64) * 128),
    ("CONV3-128", (112, 112, 128), 112 * 112 * 128, (3 * 3 * 128) * 128),
    ("POOL2", (56, 56, 128), 56 * 56 * 128, 0),
    ("CONV3-256", (56, 56, 256), 56 * 56 * 256, (3 * 3 * 128) * 256),
    ("CONV3-256", (56, 56, 256), 56 * 56 * 256, (3 * 3 * 256) * 256),
    ("CONV3-256", (56, 56, 256), 56 * 56 * 256, (3 * 3 * 256) * 256),
    ("POOL2", (28, 28, 256), 28 * 28 * 256, 0),
    ("CONV3-512", (28, 28, 512), 28 * 28 * 512, (3 * 3 * 256) * 512),
    ("CONV3-512", (28, 28, 512), 28 * 28 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", (28, 28, 512), 28 * 28 * 512, (3 * 3 * 512) * 512),
    ("POOL2", (14, 14, 512), 14 * 14 * 512, 0),
    ("CONV3-512", (14, 14, 512), 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", (14, 14, 512), 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("CONV3-512", (14, 14, 512), 14 * 14 * 512, (3 * 3 * 512) * 512),
    ("POOL2", (7, 7, 512), 7 * 7 * 512, 0),
    ("FC", (1, 1, 4096), 4096, 7 * 7 * 512 * 4096),
    ("FC", (1, 1, 4096), 4096, 4096 * 4096),
    ("FC", (1, 1, 1000), 1000, 4096 * 1000),
]


def test_vgg16_slide_constants_as_printed():
    """The transcription above, against the figures the slide prints."""
    printed = [0, 1_728, 36_864, 0, 73_728, 147_456, 0, 294_912, 589_824, 589_824, 0, 1_179_648, 2_359_296,
               2_359_296, 0, 2_359_296, 2_359_296, 2_359_296, 0, 102_760_448, 16_777_216, 4_096_000]
    assert [row[3] for row in VGG16_SLIDE] == printed
    assert VGG16_SLIDE[0][2] == 150_528 and VGG16_SLIDE[1][2] == 3_211_264


def _slide_rows(layers: list[dict]) -> list[dict]:
    """The report's rows minus what the slide doesn't list: ReLU, dropout, softmax."""
    return [l for l in layers if l["kind"] not in ("activation", "dropout")]


def test_vgg16_report_equals_slide_row_by_row():
    layers = cnndsl.load(ARCH / "vgg16.arch").report.to_json()["layers"]
    skipped = [l for l in layers if l["kind"] in ("activation", "dropout")]
    assert {l["label"] for l in skipped} == {"RELU", "DROPOUT0.5", "SOFTMAX"}
    assert all(l["implicit"] for l in skipped if l["label"] == "RELU")
    rows = _slide_rows(layers)
    assert len(rows) == len(VGG16_SLIDE)
    for row, (label, shape, memory, weights) in zip(rows, VGG16_SLIDE):
        assert row["label"] == label or row["label"].startswith(label + "-"), (row["name"], label)
        assert tuple(row["shape"]) == shape, row["name"]
        assert row["activations"] == memory, row["name"]
        assert row["weights"] == weights, row["name"]


def test_vgg16_totals():
    totals = cnndsl.load(ARCH / "vgg16.arch").report.to_json()["totals"]
    assert totals["weights"] == 138_344_128 == sum(row[3] for row in VGG16_SLIDE)
    assert totals["params"] == 138_357_544
    # The slide's rows sum to 15.2M activations (it prints 24M): the true sum.
    assert totals["activations"] == 15_237_608 == sum(row[2] for row in VGG16_SLIDE)


# -- receptive field ------------------------------------------------------------------------

def test_vgg16_receptive_field():
    layers = cnndsl.load(ARCH / "vgg16.arch").report.to_json()["layers"]
    last_conv = [l for l in layers if l["kind"] == "conv"][-1]
    last_pool = [l for l in layers if l["kind"] == "pool"][-1]
    assert last_conv["rf"]["size"] == [196, 196]
    assert last_conv["rf"]["jump"] == [16, 16]
    assert last_pool["rf"]["size"] == [212, 212]
    assert last_pool["rf"]["jump"] == [32, 32]


# -- the corpus -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(ARCH.glob("*.arch")), ids=lambda p: p.name)
def test_corpus_checks_clean(path):
    network = cnndsl.load(path)
    report = network.report
    assert report.totals.params > 0 and report.totals.activations > 0
    assert all(shape.numel > 0 for shape in report.shapes)
