"""Regressions for what benchmarks/fuzz.py found, and for issue 10's LRN cases (22: `LRN 10^15`)."""

from __future__ import annotations

import numpy as np
import pytest

import cnndsl

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

# F1: a one-input `add` returns its input itself in the PyTorch module, so a ReLU after it
# must not run in place: it overwrote `c`, which `add c` reads later (max |diff| 6.2 vs ONNX).
ALIASES = {
    "identity_add_then_skip": "input 8x8x5\nc: 1x1 conv, 5\nadd {\n  identity\n}\nrelu\nadd c\n",
    "conv_add_then_relu": "input 8x8x5\nadd {\n  1x1 conv, 5\n}\nrelu\n",
}


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_relu_after_a_one_input_add_does_not_overwrite_what_others_read(name):
    net = cnndsl.loads(ALIASES[name])
    module = net.to_torch(seed=0).eval()
    x = torch.randn(1, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = module(x).numpy()
    sess = ort.InferenceSession(net.to_onnx(weights=module).SerializeToString(), providers=["CPUExecutionProvider"])
    z = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(y, z, atol=1e-5)


def test_memory_model_treats_a_one_input_add_as_its_input():
    from cnndsl.passes.memory import relu_in_place
    net = cnndsl.loads(ALIASES["identity_add_then_skip"])
    assert not relu_in_place(net.graph)


@pytest.mark.parametrize("size", [2, 4, 10**15])
def test_even_lrn_is_refused_at_check(size):
    with pytest.raises(cnndsl.CnnDslError, match=f"LRN {size} has no centre channel"):
        cnndsl.loads(f"input 8x8x6\n3x3 conv, 8\nLRN {size}\n")


def test_lrn_wider_than_its_channels_is_refused():
    with pytest.raises(cnndsl.CnnDslError, match="LRN 9 sums over 9 channels, but its input has only 8"):
        cnndsl.loads("input 8x8x6\n3x3 conv, 8\nLRN 9\n")
    assert cnndsl.loads("input 8x8x6\n3x3 conv, 8\nLRN 7\n").report.totals.params


def test_a_diagnostic_on_a_huge_line_shows_a_window_of_it():
    """A 1 MB options line was printed whole under the caret; the window keeps the caret on the culprit."""
    line = "3x3 conv, 4" + ", pad 1" * 50 + ", strid 2" + ", pad 1" * 100_000
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.loads(f"input 8x8x3\n{line}\n")
    span = info.value.diagnostics[0].span
    text, carets = span.render().split("\n")
    assert len(text) < 200 and text.endswith("...") and "..." in text[:12]
    start = carets.index("^")
    assert text[start:start + carets.count("^")] == line[span.col - 1:span.end_col - 1]


def test_emission_holds_no_whole_constant_vector():
    """F4: a huge FC's zero bias was allocated whole (8 GB for FC 2147483647) before anything was written."""
    import tracemalloc

    from cnndsl.backends.onnx_emit import emit
    net = cnndsl.loads("input 1x1x3\nFC 100000000\n")
    tracemalloc.start()
    try:
        emit(net)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak:,} bytes traced while emitting"


def test_an_onnx_file_over_protobufs_limit_is_refused_before_writing(tmp_path):
    from cnndsl.cli import main
    arch = tmp_path / "big.arch"
    arch.write_text("network Big\ninput 1x1x3\nFC 600000000\n")
    out = tmp_path / "big.onnx"
    assert main(["compile", str(arch), "-o", str(out), "--fp16"]) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [arch]


def test_fp16_refuses_weights_beyond_its_range(tmp_path):
    """float32 weights above 65504 silently became inf with --fp16."""
    from cnndsl.backends.weights_io import WeightsError
    net = cnndsl.loads("input 4x4x3\nFC 2\n")
    weights = {k: v.detach().numpy().copy() for k, v in net.to_torch(seed=0).state_dict().items()}
    weights["fc1.weight"][1, 5] = 1e5
    net.to_onnx(weights=weights)  # fits float32
    with pytest.raises(WeightsError, match=r"'fc1.weight' holds 100000.0 at flat index 53: .* float16's range"):
        net.to_onnx(weights=weights, fp16=True)


@pytest.mark.parametrize("fold_bn", [False, True])
def test_per_channel_tensors_larger_than_a_block_lower_exactly(fold_bn):
    """Fuzz input 587370: a subsample (or a folded batch norm) over more channels than a block
    (2^18) read its constant coefficient as an array: AttributeError on the Lazy tensor."""
    net = cnndsl.loads("input 2x2x1\nc: 1x1 conv, 300000\nbatch norm\nsubsample 2x2\n")
    module = net.to_torch(seed=0).eval()
    x = np.random.default_rng(0).random((1, 1, 2, 2), dtype=np.float32)
    sess = ort.InferenceSession(net.to_onnx(weights=module, fold_bn=fold_bn).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], expected, atol=1e-5)


def test_emit_refuses_a_model_over_protobufs_limit_before_making_tensors():
    from cnndsl.backends.onnx_emit import emit
    net = cnndsl.loads("input 8x8x3\n7x7 conv, 6012345\n")  # (7*7*3 + 1) * 6012345 params, 4 bytes each
    with pytest.raises(cnndsl.CnnDslError, match="the ONNX file would take at least 3,559,308,240 bytes"):
        emit(net)
