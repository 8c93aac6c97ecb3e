"""Seed 003's sliding-window arithmetic, (W - F + 2P)/S + 1, on small inline .arch texts:
what fits, what doesn't (with the arithmetic shown, at the right line and column), and
the roundings that only drop padding or that a stride skips by design."""

from __future__ import annotations

import pytest

import cnndsl


def _out(text: str) -> list[tuple[int, ...]]:
    """The HxWxC output of every non-implicit layer after the input."""
    layers = cnndsl.loads(text).report.to_json()["layers"]
    return [tuple(l["shape"]) for l in layers[1:] if not l["implicit"]]


def _error(text: str) -> cnndsl.Diagnostic:
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.loads(text)
    (diag,) = info.value.diagnostics
    return diag


@pytest.mark.parametrize("stride, size", [(1, 5), (2, 3)])
def test_7x7_input_3x3_filter(stride, size):
    assert _out(f"input 7x7x1\n3x3 conv, 1, stride {stride}, pad 0\n") == [(size, size, 1)]


def test_7x7_input_3x3_filter_stride_3_does_not_fit():
    diag = _error("network Seed003\ninput 7x7x1\n  3x3 conv, 1, stride 3, pad 0\n")
    assert (diag.span.line, diag.span.col) == (3, 3)
    assert "(7 - 3)/3 + 1 = 2.33" in diag.message
    assert "doesn't fit" in diag.message
    assert any(note.message.startswith("fix:") for note in diag.notes)


def test_pad_1_keeps_7x7():
    assert _out("input 7x7x3\n3x3 conv, 8, stride 1, pad 1\n") == [(7, 7, 8)]


def test_default_pad_is_same_for_odd_kernels():
    assert _out("input 7x7x3\n3x3 conv, 8\n5x5 conv, 8\n") == [(7, 7, 8), (7, 7, 8)]


def test_32x32_through_two_5x5_convs():
    assert _out("input 32x32x3\n5x5 conv, 6, pad 0\n5x5 conv, 10, pad 0\n") == [(28, 28, 6), (24, 24, 10)]


def test_mnist_two_convs_reduce_28x28x1_to_7x7x32():
    text = """
input 28x28x1
conv = conv -> batch norm -> relu
5x5 conv, 16, stride 1, pad 2
max pool
5x5 conv, 32, stride 1, pad 2
max pool
FC 10
"""
    assert _out(text) == [(28, 28, 16), (14, 14, 16), (14, 14, 32), (7, 7, 32), (1, 1, 10)]


def test_resnet_stem_drops_only_padding():
    # (224 + 2*3 - 7)/2 + 1 = 112.5: the half step lands in the padding, so it passes.
    assert _out("input 224x224x3\n7x7 conv, 64, stride 2, pad 3\n") == [(112, 112, 64)]


def test_strided_1x1_skips_pixels_by_design():
    # (56 - 1)/2 + 1 = 28.5: a 1x1 window with stride 2 never meant to read every pixel.
    assert _out("input 56x56x256\n1x1 conv, 512, stride 2\n") == [(28, 28, 512)]


def test_rounding_down_that_drops_real_pixels_is_an_error():
    # (8 - 3)/2 + 1 = 3.5 with no padding: the last input column would never be read.
    diag = _error("input 8x8x1\n3x3 conv, 4, stride 2, pad 0\n")
    assert (diag.span.line, diag.span.col) == (2, 1)
    assert "(8 - 3)/2 + 1 = 3.50" in diag.message


def test_ceil_pool_rounds_up():
    assert _out("input 7x7x1\n2x2 max pool, stride 2, ceil\n") == [(4, 4, 1)]


def test_every_misfit_is_reported_at_once():
    text = "input 7x7x1\nconcat {\n  3x3 conv, 2, stride 3, pad 0\n  5x5 conv, 2, stride 3, pad 0\n}\n"
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.loads(text)
    found = [(d.span.line, d.span.col) for d in info.value.diagnostics]
    assert found == [(3, 3), (4, 3)]
    assert "(7 - 5)/3 + 1 = 1.67" in info.value.diagnostics[1].message
