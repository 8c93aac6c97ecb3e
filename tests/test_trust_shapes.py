"""Issue 10, sliding-window arithmetic and layer definitions: the fit test is pure and fast,
the checker accepts exactly what PyTorch's pooling and conv run, connection tables are sets,
even kernels get no silent off-by-one padding, and fix hints name sizes that fit."""

from __future__ import annotations

import itertools
import random
import time

import pytest
import torch
import torch.nn.functional as F

from cnndsl import CnnDslError, loads
from cnndsl.ir.ops import Conv, Pool
from cnndsl.ir.shape import Shape, ShapeProblem, Window, chain_fits, chain_sizes, fits, slide


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


# -- 12: the checker accepts exactly what PyTorch's pooling and conv run --------------------------

def _checked(op, spatial: tuple[int, ...]) -> tuple[int, ...] | str:
    try:
        return op.infer((Shape(1, spatial),)).spatial
    except ShapeProblem as exc:
        return exc.message


def _ran(fn, spatial: tuple[int, ...], *args, **kwargs) -> tuple[int, ...] | None:
    try:
        return tuple(fn(torch.zeros(1, 1, *spatial), *args, **kwargs).shape[2:])
    except RuntimeError:
        return None


# The checker's own rules, stricter than PyTorch on purpose (README, "doesn't fit"): rounding down
# that leaves real input unread, and a ceil-mode window larger than the whole padded input.
OWN_RULES = ("would never be read", "is larger than the padded input")


def _agree(checked, ran, case) -> str:
    """'refused' / 'ran' / 'own' after asserting the checker and PyTorch agree on `case`."""
    if ran is None:
        assert isinstance(checked, str), f"{case}: the checker accepts {checked}, PyTorch refuses"
        return "refused"
    if isinstance(checked, str):
        assert any(rule in checked for rule in OWN_RULES), f"{case}: PyTorch runs it, the checker says {checked}"
        return "own"
    assert checked == ran, f"{case}: the checker says {checked}, PyTorch gives {ran}"
    return "ran"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_pool_checker_agrees_with_torch_on_a_grid(rank):
    outcomes = []
    for mode, n, k, s, p, ceil in itertools.product(("max", "avg"), range(1, 6), range(1, 5), range(1, 4), range(3),
                                                    (False, True)):
        op = Pool(mode, (k,) * rank, (s,) * rank, (p,) * rank, ceil)
        fn = getattr(F, f"{mode}_pool{rank}d")
        ran = _ran(fn, (n,) * rank, k, s, p, ceil_mode=ceil)
        outcomes.append(_agree(_checked(op, (n,) * rank), ran, (mode, rank, n, k, s, p, ceil)))
    assert outcomes.count("refused") > 50 and outcomes.count("ran") > 200  # the grid covers both sides


def test_pool_checker_agrees_with_torch_on_mixed_axes():
    for spatial, kernel, pad in [((2, 5, 5), (3, 3, 3), (1, 1, 1)), ((5, 2, 5), (1, 3, 3), (0, 1, 1)),
                                 ((4, 4), (3, 4), (1, 2)), ((3, 3, 3), (3, 3, 3), (1, 0, 1))]:
        for mode in ("max", "avg"):
            op = Pool(mode, kernel, (1,) * len(kernel), pad)
            ran = _ran(getattr(F, f"{mode}_pool{len(kernel)}d"), spatial, kernel, 1, pad)
            _agree(_checked(op, spatial), ran, (mode, spatial, kernel, pad))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_checker_agrees_with_torch_on_a_grid(rank):
    outcomes = []
    for n, k, s, p, d in itertools.product(range(1, 6), range(1, 5), range(1, 4), range(3), (1, 2)):
        op = Conv(1, (k,) * rank, (s,) * rank, (p,) * rank, (d,) * rank)
        ran = _ran(getattr(F, f"conv{rank}d"), (n,) * rank, torch.zeros(1, 1, *(k,) * rank), None, s, p, d)
        outcomes.append(_agree(_checked(op, (n,) * rank), ran, (rank, n, k, s, p, d)))
    assert outcomes.count("refused") > 20 and outcomes.count("ran") > 100


def test_3d_average_pool_smaller_than_its_window_is_refused_with_the_rule():
    message = _error("input 2x2x2x1\n3x3x3 average pool, stride 1, pad 1\n")
    assert "<string>:2:1: error: 3x3x3 avg pool" in message
    assert "3D average pool needs the input to be at least as large as its window (2 < 3)" in message
    assert "fix: use an input of at least 3x3x3 here" in message
    loads("input 2x2x2x1\n3x3x3 max pool, stride 1, pad 1\n")  # max pool runs: padding makes the room
    loads("input 3x3x3x1\n3x3x3 average pool, stride 1, pad 1\n")


@pytest.mark.timeout(60)
def test_pools_the_checker_accepts_run_in_onnxruntime_and_torch_alike():
    import numpy as np
    import onnxruntime as ort

    for rank, mode, n, k, s, p, ceil in [(3, "average", 3, 3, 1, 1, False), (3, "average", 4, 3, 2, 1, True),
                                         (2, "max", 5, 4, 3, 2, True), (1, "average", 2, 3, 2, 1, False),
                                         (3, "max", 2, 3, 1, 1, False), (2, "average", 7, 2, 3, 1, True)]:
        text = f"input {'x'.join([str(n)] * rank)}x2\n{'x'.join([str(k)] * rank)} {mode} pool, stride {s}, pad {p}" \
               f"{', ceil' if ceil else ''}\n"
        net = loads(text)
        session = ort.InferenceSession(net.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, 2, *(n,) * rank), dtype=np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            want = net.to_torch().eval()(torch.from_numpy(x)).numpy()
        assert got.shape[2:] == want.shape[2:] == net.shapes[-1].spatial, text
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=text)


# -- 11: a connection table group lists each input map once ------------------------------------------

def test_table_group_repeating_an_input_map_is_refused_at_the_group():
    message = _error("input 8x8x3\n1x1 conv, 2, table m01-m121\n")
    assert message.startswith("<string>:2:24: error: group 1 of the connection table (output map 1) lists input map 1 twice")
    assert "                              ^^^^\n" in message  # under m121 only
    assert "fix: write `m12`" in message


def test_table_conv_refuses_options_it_would_drop():
    assert "takes no `stride`" in _error("input 32x32x3\n5x5 conv, 3, stride 2, pad valid, table m0-m1-m2\n")
    assert "does not pad" in _error("input 32x32x3\n5x5 conv, 3, table m0-m1-m2\n")  # default padding: 2
    assert "always has a bias" in _error("input 32x32x3\n5x5 conv, 3, pad valid, bias off, table m0-m1-m2\n")
    assert loads("input 32x32x3\n5x5 conv, 3, stride 1, pad valid, table m0-m12-m2\n").shapes[-1].spatial == (28, 28)


# -- 21: an even kernel's default padding -----------------------------------------------------------

def test_even_kernel_without_a_pad_asks_for_one():
    message = _error("input 32x32x3\n4x4 conv, 8\n")  # used to give 31x31 silently
    assert message.startswith("<string>:2:1: error: a 4x4 conv has no centre, so no padding keeps the size")
    assert "fix: add `, pad 1` (the output one smaller than the input), `, pad 2` (one larger), or `, pad valid`" in message
    assert "2 (dilation 3) conv has no centre" in _error("input 32x3\n2 conv, 8, dilation 3\n")
    assert loads("input 32x32x3\n4x4 conv, 8, pad 1\n").shapes[-1].spatial == (31, 31)
    assert loads("input 32x32x3\n4x4 conv, 8, pad valid\n").shapes[-1].spatial == (29, 29)
    assert loads("input 32x32x3\n3x3 conv, 8, dilation 2\n").shapes[-1].spatial == (32, 32)  # extent 5: centred
    assert loads("input 32x32x3\n2x2 conv, 8, dilation 2\n").shapes[-1].spatial == (32, 32)  # extent 3: centred


# -- 26: fix hints -------------------------------------------------------------------------------

def test_hints_write_sizes_in_the_input_rank():
    one = _error("input 128x3\n3 conv, 8, stride 2, pad 0\n")
    assert "doesn't fit a length-128 input" in one and "so the last position of the input" in one
    assert "fix: use `pad 1`, or an input of length 129 or 127 here" in one  # was `an input of 129x129`
    three = _error("input 9x8x9x3\n3x3x3 conv, 8, stride 2, pad 0\n")
    assert "doesn't fit a 9x8x9 input" in three
    assert "fix: use `pad 0x1x0`, or an input of 9x9x9 or 9x7x9 here" in three  # only the axis that fails


def test_pool_hints_suggest_ceil():
    message = _error("input 7x7x3\n3x3 max pool, stride 3\n")
    assert "fix: use `pad 1`, or `ceil`, or an input of 9x9 or 6x6 here" in message
    loads("input 7x7x3\n3x3 max pool, stride 3, ceil\n")  # the suggestion works
    padded = _error("input 9x9x3\n3x3 max pool, stride 3, pad 1\n")  # pad 2 would fit, but a pool pads at most
    assert "fix: use `ceil`, or an input of 10x10 or 8x8 here" in padded  # half its window


def test_hints_name_a_network_input_that_fits_not_the_layers_own_input():
    text = "input {}x3\n3x3 conv, 8\nmax pool\n3x3 conv, 8, stride 2, pad 0\n"
    message = _error(text.format("224x224"))
    assert "input here: 112x112x8" in message
    assert "fix: use `pad 1`, or `input 226x226x3` or `input 222x222x3`" in message  # not 113x113 or 111x111
    for size in ("226x226", "222x222"):
        loads(text.format(size))
    for size in ("223x223", "224x224", "225x225"):  # none nearer fits
        with pytest.raises(CnnDslError):
            loads(text.format(size))


def test_hints_name_a_network_input_when_the_layer_is_too_small():
    message = _error("input 32x32x3\n[3x3 conv, 16; max pool] x 4\n7x7 conv, 8, pad 0\n")
    assert "fix: remove a downsampling layer before it, or use `pad 3`, or `input 112x112x3`" in message
    loads("input 112x112x3\n[3x3 conv, 16; max pool] x 4\n7x7 conv, 8, pad 0\n")
    with pytest.raises(CnnDslError):
        loads("input 111x111x3\n[3x3 conv, 16; max pool] x 4\n7x7 conv, 8, pad 0\n")


def test_chain_sizes_are_the_nearest_that_fit():
    rng = random.Random(0)
    for _ in range(300):
        chain = tuple((Window(rng.randint(1, 5), rng.randint(1, 3), rng.randint(0, 2)), rng.random() < 0.3, False)
                      for _ in range(rng.randint(1, 4)))
        size = rng.randint(1, 60)
        below, above, _ = chain_sizes(size, chain)
        fitting = [n for n in range(1, 400) if chain_fits(n, chain)]
        assert below == max((n for n in fitting if n < size), default=None), (chain, size)
        if any(n > size for n in fitting):
            assert above == min(n for n in fitting if n > size), (chain, size)


@pytest.mark.timeout(10)
def test_network_hints_stay_fast_on_a_deep_network():
    start = time.perf_counter()
    message = _error("input 224x224x3\n3x3 conv, 8\n" + "relu\n" * 5000 + "max pool\n3x3 conv, 8, stride 2, pad 0\n")
    assert "`input 226x226x3`" in message
    assert time.perf_counter() - start < 3


@pytest.mark.timeout(20)
def test_network_hints_share_a_bounded_budget_across_many_errors():
    # 17 stride-2 pools make the search period 2^17; 300 branches each fail after them
    prefix = f"input {10 * 2**17}x1\n" + "2 max pool\n" * 17  # 10 long after the pools
    branches = "concat {\n" + "  [3 conv, 1, pad 0; 3 conv, 1, stride 2, pad 0]\n" * 300 + "}\n"
    start = time.perf_counter()
    message = _error(prefix + branches)
    assert message.count("doesn't fit a length-8 input") == 300
    assert time.perf_counter() - start < 5
