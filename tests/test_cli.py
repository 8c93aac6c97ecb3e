"""The command line: exit codes, --json, --input/--batch/--dtype, and no torch at check time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

VGG = "architectures/vgg16.arch"
BROKEN = "architectures/invalid/unknown_layer.arch"


# -- exit codes --------------------------------------------------------------------------------

def test_clean_file_exits_0(cli):
    result = cli("check", VGG)
    assert result.code == 0, result.err
    assert result.err == ""
    assert "CONV3-64" in result.out and "params" in result.out


def test_diagnostics_exit_1(cli):
    result = cli("check", BROKEN)
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(f"{BROKEN}:6:1: error: unknown layer 'convv'")


def test_json_with_diagnostics_exits_1_and_prints_no_json(cli):
    result = cli("check", BROKEN, "--json")
    assert (result.code, result.out) == (1, "")
    assert "error:" in result.err


@pytest.mark.parametrize("args, words", [
    (["check", "architectures/no_such.arch"], "no such file"),
    (["check", "architectures"], "is a directory"),
    (["check", VGG, "--input", "22x"], "--input"),
    (["check", VGG, "--input", "x3"], "--input"),
    (["check", VGG, "--input", "0x32x3"], "--input"),
    (["check", VGG, "--input", "32x32x-3"], "--input"),
    (["check", VGG, "--batch", "0"], "--batch"),
    (["check", VGG, "--batch", "-1"], "--batch"),
    (["check", VGG, "--batch", "two"], "--batch"),
    (["check", VGG, "--batch", "1.5"], "--batch"),
    (["check", VGG, "--dtype", "fp8"], "--dtype"),
    (["check", VGG, "--frobnicate"], "unrecognized arguments"),
    (["check"], "FILE"),
    ([], "COMMAND"),
    (["compile-all-the-things", VGG], "invalid choice"),
])
def test_usage_errors_exit_2(cli, args, words):
    result = cli(*args)
    assert result.code == 2, result.err
    assert words in result.err
    assert "Traceback" not in result.err
    assert result.out == ""


def test_binary_file_is_a_usage_error(cli, tmp_path):
    bad = tmp_path / "bad.arch"
    bad.write_bytes(b"input 32x32x3\n\xff\xfe conv\n")
    result = cli("check", str(bad))
    assert result.code == 2
    assert "UTF-8" in result.err


def test_help_exits_0_and_states_conventions(cli):
    result = cli("check", "--help")
    assert result.code == 0
    assert "counting conventions" in result.out and "FLOPs = 2 x MACs" in result.out


def test_internal_error_is_one_line_exit_3(cli, monkeypatch):
    import cnndsl.cli

    def broken(args):
        raise RuntimeError("boom")
    monkeypatch.setitem(cnndsl.cli.COMMANDS, "check", broken)
    result = cli("check", VGG)
    assert result.code == 3
    assert result.err.strip() == ("cnndsl: internal error: RuntimeError: boom (please report this with the input file)")


# -- --json ------------------------------------------------------------------------------------

LAYER_KEYS = {"name", "kind", "line", "shape", "params", "weights", "activations", "macs", "rf"}
TOTAL_KEYS = {"params", "weights", "activations", "macs", "flops"}


def _json(cli, *args) -> dict:
    result = cli("check", *args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


@pytest.fixture
def vgg_json(cli) -> dict:
    return _json(cli, VGG)


def test_json_has_the_documented_keys(vgg_json):
    report = vgg_json
    assert report["network"] == "VGG16"
    assert report["schema"] == "cnndsl.check/1"
    assert report["layers"] and TOTAL_KEYS <= set(report["totals"])
    for layer in report["layers"]:
        assert LAYER_KEYS <= set(layer), LAYER_KEYS - set(layer)
        assert len(layer["shape"]) == 3 and all(isinstance(d, int) and d > 0 for d in layer["shape"])
        assert set(layer["rf"]) == {"size", "jump", "start"}
        assert all(len(layer["rf"][k]) == 2 for k in ("size", "jump", "start"))
        assert isinstance(layer["line"], int) and layer["line"] >= 1


def test_json_totals_are_the_sums_of_the_layers(vgg_json):
    layers, totals = vgg_json["layers"], vgg_json["totals"]
    for key in ("params", "weights", "activations", "macs"):
        assert totals[key] == sum(layer[key] for layer in layers), key
    assert totals["flops"] == 2 * totals["macs"]
    assert totals["params"] == 138_357_544  # torchvision's vgg16: sum(p.numel())


def test_json_layer_rows(vgg_json):
    conv1 = next(layer for layer in vgg_json["layers"] if layer["kind"] == "conv")
    assert conv1["shape"] == [224, 224, 64]
    assert conv1["params"] == 3 * 3 * 3 * 64 + 64 and conv1["weights"] == 3 * 3 * 3 * 64
    assert conv1["macs"] == 224 * 224 * 64 * 3 * 3 * 3
    assert conv1["rf"]["size"] == [3, 3] and conv1["rf"]["jump"] == [1, 1]
    lines = (ROOT / VGG).read_text(encoding="utf-8").split("\n")
    assert conv1["line"] == 1 + next(i for i, text in enumerate(lines) if text.startswith("3x3 conv"))
    assert conv1["col"] == 1


def test_input_override(cli, vgg_json):
    small = _json(cli, VGG, "--input", "32x32x3")
    assert small["input"] == [32, 32, 3]
    assert small["layers"][0]["shape"] == [32, 32, 3]
    conv1 = next(layer for layer in small["layers"] if layer["kind"] == "conv")
    assert conv1["shape"] == [32, 32, 64]
    assert conv1["macs"] == 32 * 32 * 64 * 3 * 3 * 3
    fc1 = next(layer for layer in small["layers"] if layer["kind"] == "linear")
    assert fc1["params"] == 1 * 1 * 512 * 4096 + 4096  # five pools take 32 to 1
    assert small["totals"]["macs"] < vgg_json["totals"]["macs"]


def test_input_override_that_does_not_fit_exits_1(cli):
    result = cli("check", VGG, "--input", "16x16x3")
    assert result.code == 1
    assert "doesn't fit" in result.err


def test_dtype_fp16_halves_the_bytes(cli, vgg_json):
    half = _json(cli, VGG, "--dtype", "fp16")
    assert half["dtype"] == "fp16"
    assert half["totals"]["activations"] == vgg_json["totals"]["activations"]
    assert 2 * half["totals"]["activation_bytes"] == vgg_json["totals"]["activation_bytes"]
    assert vgg_json["totals"]["activation_bytes"] == 4 * vgg_json["totals"]["activations"]
    text = cli("check", VGG, "--dtype", "fp16")
    assert "at fp16" in text.out


def test_batch_multiplies_the_bytes(cli, vgg_json):
    four = _json(cli, VGG, "--batch", "4")
    assert four["batch"] == 4
    assert four["totals"]["activation_bytes"] == 4 * vgg_json["totals"]["activation_bytes"]
    assert four["totals"]["params"] == vgg_json["totals"]["params"]


# -- a real process ------------------------------------------------------------------------------

def test_check_never_imports_torch_or_onnx():
    code = ("import sys, cnndsl.cli\n"
            f"assert cnndsl.cli.main(['check', {VGG!r}, '--json']) == 0\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime'))\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path, code", [(VGG, 0), (BROKEN, 1), ("architectures/no_such.arch", 2)])
def test_python_m_cnndsl_exit_codes(path, code):
    proc = subprocess.run([sys.executable, "-m", "cnndsl", "check", path], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr


def test_python_m_cnndsl_output_is_whole(cli):
    """The process ends without tearing the interpreter down (cnndsl.cli.entry): what it printed
    through a pipe is all there, as in-process."""
    for path in (VGG, BROKEN):
        proc = subprocess.run([sys.executable, "-m", "cnndsl", "check", path, "--json"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        expected = cli("check", path, "--json")
        assert (proc.returncode, proc.stdout, proc.stderr) == (expected.code, expected.out, expected.err)


def test_closed_pipe_is_quiet():
    """`cnndsl check --json | head -c 10`: the reader goes away with 300 KB unread; cnndsl exits 0
    without a word (pipefail: the exit code is cnndsl's)."""
    command = f"set -o pipefail; {sys.executable} -m cnndsl check architectures/resnet152.arch --json | head -c 10"
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and len(proc.stdout) == 10 and proc.stderr == ""
