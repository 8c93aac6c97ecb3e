"""Issue 10 (trust), the builder's and the analysis passes' share: every case the fuzzing
campaign found that crashed, hung or printed a wrong number after parsing, and the limits
that keep any input of up to 1 MB answered in well under a second after parsing."""

from __future__ import annotations

import time
import typing
from dataclasses import replace

import pytest

import cnndsl
from cnndsl.ir.build import build
from cnndsl.ir.limits import MAX_DEPTH, MAX_NODES
from cnndsl.ir.graph import Op, is_weighted, takes_activation
from cnndsl.ir.joins import PartialConv
from cnndsl.ir.ops import Activation
from cnndsl.ir.options import MAX_OPTIONS
from cnndsl.ir.shape import Shape
from cnndsl.passes import count, infer_shapes, receptive_fields
from cnndsl.passes.counts import MAX_PARAMS, check_sizes
from cnndsl.passes.report import _bytes, human
from cnndsl.passes.shapes import MAX_ELEMENTS
from cnndsl.source import Source, Span
from cnndsl.syntax import ast, parse

pytestmark = pytest.mark.timeout(60)


def _errors(text: str) -> tuple[cnndsl.Diagnostic, ...]:
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.loads(text, name="t.arch")
    return info.value.diagnostics


def _timed_errors(text: str, limit_s: float = 1.0) -> tuple[cnndsl.Diagnostic, ...]:
    start = time.perf_counter()
    diags = _errors(text)
    assert time.perf_counter() - start < limit_s
    return diags


# -- 1: an empty residual group ------------------------------------------------------------

@pytest.mark.parametrize("body", ["[]", "b()"])
def test_empty_residual_group_is_a_located_error(body):
    text = "input 8x8x3\nactivation relu\nblock b() {\n  let k = 1\n}\n3x3 conv, 4\n" + body + ", residual\n"
    (d,) = _errors(text)
    assert (d.span.line, d.span.col) == (7, 1)
    assert d.message == "a residual group must contain at least one layer"


def test_residual_block_whose_body_fails_reports_only_that():
    (d,) = _errors("input 8x8x3\nblock b() {\n  3x3 frob, 4\n}\nb(), residual\n")
    assert d.message == "unknown layer 'frob'" and d.span.line == 3


# -- 4: huge literals: no OverflowError, no float in the message ---------------------------

def test_literal_of_310_digits_is_reported_by_its_length():
    (d,) = _errors("input 8x8x3\nFC 1" + "0" * 309 + "\n")
    assert d.message == "value with 310 digits is absurdly large (at most 1,000,000,000,000,000)"


def test_large_literal_is_printed_exactly():
    (d,) = _errors("input 8x8x3\nFC 1" + "0" * 30 + "\n")
    assert d.message.startswith("value 1," + ",".join(["000"] * 10) + " is absurdly large")


# -- 6, 7: repeats of nothing, recursive blocks --------------------------------------------

def test_empty_group_repeated_10_to_15_times_ends_at_once():
    start = time.perf_counter()
    net = cnndsl.loads("input 8x8x3\n[] x 1000000000000000\nFC 2\n")
    assert time.perf_counter() - start < 1.0
    assert [type(n.op).__name__ for n in net.graph.nodes] == ["Input", "Linear"]


@pytest.mark.parametrize("count", ["1000000", "1000000000"])
def test_let_only_block_repeated_ends_at_once(count):
    start = time.perf_counter()
    net = cnndsl.loads(f"input 8x8x3\nblock a() {{\n  let k = 1\n}}\na() x {count}\nFC 2\n")
    assert time.perf_counter() - start < 1.0 and len(net.graph.nodes) == 2


def test_recursive_block_in_nested_repeats_is_one_error_fast():
    (d,) = _timed_errors("input 8x8x3\nblock a() {\n  a()\n}\n[a() x 1000] x 1000\nFC 2\n")
    assert "uses itself" in d.message and d.span.line == 3


def test_block_chain_deeper_than_the_limit_is_located():
    n = 3000  # raised RecursionError before the depth limit
    text = "input 8x8x3\n" + "".join(f"block b{i}() {{\n  b{i + 1}()\n}}\n" for i in range(n)) + \
        f"block b{n}() {{\n  3x3 conv, 4\n}}\nb0()\n"
    (d,) = _timed_errors(text, 2.0)
    assert d.message == f"groups, branches and block uses are nested more than {MAX_DEPTH} deep here"


# -- 9: large inputs: cost after parsing is linear and bounded by the limits ----------------

def _many(first: str, line: str, n: int, last: str = "") -> ast.Module:
    """The module of `first`, `line` n times, then `last`, without parsing it n times (the
    parser's own speed is another test's): one parsed line copied with its line number."""
    parsed = parse(Source("big.arch", f"{first}\n{line}\n{last}\n"))
    head, one, *tail = parsed.statements
    sp = one.span
    copies = tuple(ast.Line(one.label, one.unit, one.repeat, one.options, Span(sp.source, i, sp.col, i, sp.end_col))
                   for i in range(2, n + 2))
    return ast.Module(parsed.source, (head, *copies, *tail))


def _build_time(module: ast.Module) -> tuple[float, tuple[cnndsl.Diagnostic, ...]]:
    start = time.perf_counter()
    try:
        build(module)
        diags = ()
    except cnndsl.CnnDslError as exc:
        diags = exc.diagnostics
    return time.perf_counter() - start, diags


@pytest.mark.parametrize("line", ["relu", "3x3 conv, 4"])
def test_100k_layer_lines_are_refused_at_the_layer_limit(line):
    elapsed, (d,) = _build_time(_many("input 8x8x3", line, 100_000))
    assert d.span.line == MAX_NODES + 1 and d.message.startswith(f"the network has more than {MAX_NODES:,} layers")
    assert elapsed < 1.0


def test_a_network_at_the_layer_limit_checks_quickly():
    module = _many("input 8x8x3", "3x3 conv, 4", MAX_NODES - 1)
    start = time.perf_counter()
    graph = build(module)
    shapes = infer_shapes(graph)
    counts = count(graph, shapes)
    check_sizes(graph, shapes, counts)
    receptive_fields(graph, shapes)
    assert len(graph.nodes) == MAX_NODES
    assert time.perf_counter() - start < 2.0


def test_100k_let_lines_build_linearly():
    first = parse(Source("big.arch", "input 8x8x3\nlet a = 1\nFC 2\n")).statements
    lets = tuple(replace(first[1], name=f"a{i}") for i in range(100_000))
    elapsed, diags = _build_time(ast.Module(Source("big.arch", ""), (first[0], *lets, first[2])))
    assert diags == () and elapsed < 1.0


def test_a_line_with_too_many_options_is_refused_at_the_first_extra_one():
    (d,) = _timed_errors("input 8x8x3\n3x3 conv, 4" + ", 1" * 10_000 + "\n")
    assert d.message == f"a line may have at most {MAX_OPTIONS} options; this one has 10,001"
    assert (d.span.line, d.span.col) == (2, 11 + 3 * MAX_OPTIONS)  # the value of option 65


# -- 13: weights or activations no machine could hold --------------------------------------

def test_fc_with_more_weights_than_any_machine_holds():
    (d,) = _errors("input 1000x1000x3\nFC 100000000\n")
    assert d.span.line == 2
    assert d.message == (f"this layer has 300,000,000,000,000 weights, more than any machine could hold "
                         f"(at most {MAX_ELEMENTS:,} in one layer)")


def test_input_tensor_too_large_for_any_machine():
    (d,) = _errors("input 2147483647x2147483647x2147483647\nFC 10\n")
    assert (d.span.line, d.span.col) == (1, 1) and d.message.startswith("a tensor of 2147483647x2147483647x2147483647 has")


def test_total_parameters_over_the_limit_point_at_the_layer_crossing_it():
    # each FC has 4e11 + 4e5 parameters: the third crosses 10^12
    text = "input 1x1x400000\nFC 1000000\nFC 400000\nFC 1000000\nFC 400000\n"
    (d,) = _errors(text)
    assert d.span.line == 4 and "parameters up to this layer" in d.message and f"{MAX_PARAMS:,}" in d.message


def test_large_but_holdable_network_is_accepted_with_terabyte_units():
    net = cnndsl.loads("input 8x8x3\nFC 1000000000\n")
    assert net.report.totals.params == 193_000_000_000
    assert _bytes(2.5e12) == "2.50 TB" and _bytes(3e15) == "3.00 PB" and _bytes(772e9) == "772.00 GB"
    assert human(1.2e12) == "1.2T" and human(3e15) == "3P"


# -- 19: the activation policy follows every weighted layer ---------------------------------

def test_lenet5_c3_gets_its_tanh():
    net = cnndsl.load("architectures/lenet5.arch")
    nodes = net.graph.nodes
    c3 = next(n for n in nodes if n.name == "C3")
    after = nodes[c3.id + 1]
    assert isinstance(c3.op, PartialConv)
    assert isinstance(after.op, Activation) and after.op.fn == "tanh" and after.implicit and after.inputs == (c3.id,)


def test_every_op_kind_is_classified_for_the_activation_policy():
    """A new weighted op must be seen by the policy: every op whose weights grow with its
    output channels is weighted (BN, subsampling and the shortcut hold one scale a map)."""
    weighted = {cls.__name__ for cls in typing.get_args(Op) if is_weighted(object.__new__(cls))}
    assert weighted == {"Conv", "Linear", "PartialConv"}
    assert takes_activation(PartialConv(((0,),), (3, 3)))


# -- 22: accepted without a word ------------------------------------------------------------

def test_two_input_lines_are_an_error_on_the_second():
    (d,) = _errors("input 8x8x3\nFC 10\ninput 4x4x3\n")
    assert (d.span.line, d.message) == (3, "`input` is given twice")
    assert d.notes[0].span.line == 1


def test_label_clashing_with_nn_module_fails_check_too():
    (d,) = _errors("input 8x8x3\nforward: FC 10\n")
    assert (d.span.line, d.span.col) == (2, 1) and "nn.Module attribute 'forward'" in d.message


# -- 24: an error in a block is reported once -----------------------------------------------

def test_error_in_a_block_is_reported_once_with_its_uses():
    text = "input 32x32x3\nblock b(w) {\n  3x3 conv, w, strid 2\n  3x3 frob, w\n}\nb(8)\nb(16)\nb(32)\nb(8)\nFC 10\n"
    diags = _errors(text)
    assert [d.span.line for d in diags] == [3, 4]
    for d in diags:
        uses = [n.span.line for n in d.notes if n.span is not None and n.message == "in the block used here"]
        assert uses == [6, 7, 8]
        assert d.notes[-1].message == "and in 1 more use of the block"


def test_shape_error_in_a_block_used_twice_alike_is_one_error():
    text = "input 8x8x3\nblock b() {\n  9x9 conv, 4, pad 0\n}\nconcat {\n  b()\n  b()\n}\n"
    (d,) = _errors(text)
    assert d.span.line == 3 and [n.span.line for n in d.notes if n.span] == [6, 7]


# -- 25: --input blamed on the flag --------------------------------------------------------

def test_input_override_of_the_wrong_rank_blames_the_flag(cli):
    result = cli("check", "architectures/vgg16.arch", "--input", "224x224")
    assert result.code == 1
    assert result.err.startswith("--input:1:1: error: --input 224x224 is 1D, but this network's input is 2D (224x224x3)")
    assert "architectures/vgg16.arch:5:1: note: the file's input size, here" in result.err


def test_input_override_too_small_says_where_the_size_comes_from():
    with pytest.raises(cnndsl.CnnDslError) as info:
        cnndsl.load("architectures/vgg16.arch", input_shape=Shape(3, (2, 2)))
    d = info.value.diagnostics[0]
    assert d.notes[-1].span.source.name == "--input" and "2x2x3 comes from here" in d.notes[-1].message


def test_growing_past_the_layer_limit_inside_a_repeat_is_not_blamed_on_a_small_count():
    (d,) = _timed_errors("input 8x8x3\n3x3 conv, 4\n[[3x3 conv, 4] x 2, residual] x 4000\n")
    assert d.message.startswith(f"the network has more than {MAX_NODES:,} layers") and (d.span.line, d.span.col) == (3, 2)


def test_generated_names_avoid_a_group_label_written_later():
    """Found by the campaign: `conv2: wide(...) x n, residual` after two unlabelled convs made
    `conv2` both a layer and a group, and the PyTorch backend raised ValueError."""
    net = cnndsl.loads("input 8x8x3\n3x3 conv, 4\n3x3 conv, 4\nconv2: [3x3 conv, 4] x 2, residual\n")
    names = [n.name for n in net.graph.nodes]
    assert len(set(names)) == len(names)
    assert not [a for a in names for b in names if b.startswith(a + ".")]
    assert names[:3] == ["input", "conv1", "conv3"]


def test_input_override_keeps_the_files_line_in_the_report():
    net = cnndsl.load("architectures/vgg16.arch", input_shape=Shape(3, (224, 224)))
    assert net.graph.nodes[0].span.line == 5 and net.report.to_json()["layers"][0]["line"] == 5
    assert net.graph.input_flag.source.name == "--input"
