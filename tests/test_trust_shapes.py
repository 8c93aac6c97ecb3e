"""Issue 10, sliding-window arithmetic and layer definitions: the fit test is pure and fast,
the checker accepts exactly what PyTorch's pooling and conv run, connection tables are sets,
even kernels get no silent off-by-one padding, and fix hints name sizes that fit."""

from __future__ import annotations

import time

import pytest

from cnndsl import CnnDslError, loads
from cnndsl.ir.shape import Window, fits, slide


def _error(text: str) -> str:
    with pytest.raises(CnnDslError) as info:
        loads(text)
    return str(info.value)


# -- the hang: _fix -> _fits -> window_out -> _fix recursed without bound -----------------------

@pytest.mark.timeout(10)
def test_doesnt_fit_hint_is_instant_for_a_large_stride():
    start = time.perf_counter()
    message = _error("input 1001x1001x3\n40x40 conv, 8, stride 39, pad 0\n")
    assert time.perf_counter() - start < 0.5  # was 99 s
    assert "doesn't fit a 1001x1001 input" in message
    assert "fix: use `pad 7`, or an input of 1015x1015 or 976x976 here" in message


@pytest.mark.timeout(10)
def test_fit_hints_stay_bounded_over_a_grid_of_large_strides():
    start = time.perf_counter()
    for size in (97, 1001, 40_009):
        for kernel in (7, 40, 333):
            for stride in (13, 39, 257, 4099):
                try:
                    slide((size,), (Window(kernel, stride),), False, "conv")
                except Exception as exc:  # noqa: BLE001 - ShapeProblem is the only one expected
                    assert type(exc).__name__ == "ShapeProblem", exc
    assert time.perf_counter() - start < 1.0


def test_fits_is_a_pure_predicate():
    assert fits(7, Window(3, 3)) is False  # one row left unread
    assert fits(7, Window(3, 3, 1)) is True
    assert fits(7, Window(3, 3), ceil=True) is True
    assert fits(2, Window(5)) is False  # larger than the input: no exception, just False
    assert fits(8, Window(1, 3)) is True  # a 1x1 window's stride skips rows anyway
