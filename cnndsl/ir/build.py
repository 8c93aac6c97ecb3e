"""AST to IR graph: resolves constants, blocks, repeats, residual groups, branches,
skips, the activation policy and expansion rules. Layer words are looked up in
cnndsl.ir.layers. Shapes are not computed here (see cnndsl.passes.shapes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cnndsl.diagnostics import Note
from cnndsl.ir import layers
from cnndsl.ir.directives import Settings, apply_directive, directive, drop_last_policy_activation, input_span
from cnndsl.ir.expr import BuildError, Env, ErrorLog, evaluate, positive_int
from cnndsl.ir.graph import Graph, Node, Op, takes_activation
from cnndsl.ir.joins import Add, Concat, Resize, Shortcut
from cnndsl.ir.limits import MAX_NODES, TooBig, check_repeat, deeper, too_many
from cnndsl.ir.names import Names
from cnndsl.ir.ops import Activation, Input
from cnndsl.ir.options import Options, suggest
from cnndsl.ir.shape import Shape
from cnndsl.source import Span
from cnndsl.syntax import ast


@dataclass
class _Frame:
    """Where we are: block uses (for diagnostics and names), constants, labels."""

    env: Env
    scope: tuple[str, ...] = ()
    trace: tuple[Span, ...] = ()
    calls: tuple[str, ...] = ()
    copies: int = 1  # how many times the enclosing repeats build this place
    depth: int = 0  # groups, branches and block uses around this place


class Builder:
    """Builds one graph; collects every diagnostic it can before raising."""

    def __init__(self, module: ast.Module, input_override: Shape | None = None):
        self.module = module
        self.errors = ErrorLog()
        self.settings = Settings()
        self.override = input_override
        self.flag: Span | None = None  # the --input flag, when it sets the input size
        self.nodes: list[Node] = []
        self.blocks: dict[str, ast.BlockDef] = {}
        self.labels: dict[str, int] = {}
        self.names = Names()

    def build(self) -> Graph:
        statements = self.module.statements
        frame = _Frame(Env({}))
        self._directives(statements, frame)
        try:
            span, self.flag = input_span(self.settings, self.override, self.module)
        except BuildError as exc:
            self.errors.report(exc)
            self.errors.raise_if_any()
        self._add(Input(self.override or self.settings.input), (), span, frame, "input")
        try:
            self._statements(statements, 0, frame)
        except TooBig as exc:
            self.errors.error(exc.span, exc.message, trace=exc.trace)
        self.errors.raise_if_any()
        return self._finish()

    def _finish(self) -> Graph:
        nodes = self.nodes
        if self.settings.activation:
            nodes = drop_last_policy_activation(nodes)
        return Graph(self.settings.name, tuple(nodes), nodes[-1].id, self.flag)

    # -- statements --------------------------------------------------------------------

    def _directives(self, statements, frame: _Frame) -> None:
        """First pass: constants, rules, blocks and network-level lines (order-independent)."""
        for st in statements:
            try:
                if isinstance(st, ast.Let):
                    frame.env.values[st.name] = evaluate(st.value, frame.env)
                elif isinstance(st, ast.Rule):
                    self._rule(st, frame)
                elif isinstance(st, ast.BlockDef):
                    if st.name in self.blocks:
                        raise BuildError(st.span, f"block '{st.name}' is defined twice")
                    self.blocks[st.name] = st
                elif isinstance(st, ast.Line) and directive(st):
                    apply_directive(st, self.settings, frame.env)
            except BuildError as exc:
                self.errors.report(exc, frame.trace)

    def _rule(self, st: ast.Rule, frame: _Frame) -> None:
        first = st.chain[0]
        if first.words != (st.name,) or first.options:
            raise BuildError(first.span, f"a rule for '{st.name}' must start with '{st.name}' alone",
                             Note(f"e.g. `{st.name} = {st.name} -> batch norm -> relu`"))
        if st.name not in ("conv", "fc"):
            raise BuildError(st.span, f"rules can expand `conv` and `fc`, not '{st.name}'")
        self.settings.rules[st.name] = tuple(layers.rule_step(step, frame.env) for step in st.chain[1:])

    def _statements(self, statements, current: int, frame: _Frame) -> int:
        self.names.reserve(frame.scope, [st for st in statements if isinstance(st, ast.Line)])
        for st in statements:
            if isinstance(st, ast.Line) and not directive(st):
                current = self._guarded_line(st, current, frame)
        return current

    def _guarded_line(self, line: ast.Line, current: int, frame: _Frame) -> int:
        try:
            return self._line(line, current, frame)
        except BuildError as exc:
            self.errors.report(exc, frame.trace)
            return current  # keep going so later lines are checked too

    # -- lines -------------------------------------------------------------------------

    def _line(self, line: ast.Line, current: int, frame: _Frame) -> int:
        opts = Options(line.options, frame.env)
        residual = opts.flag("residual")
        stride = opts.int("stride", 1) if (residual or not isinstance(line.unit, ast.Head)) else 1
        count = positive_int(line.repeat, frame.env, "repeat count") if line.repeat is not None else 1
        if line.repeat is not None:
            check_repeat(line, count, frame.copies, frame.depth, frame.trace, len(self.nodes), self.blocks)
        if not isinstance(line.unit, ast.Head):
            opts.finish(("residual", "stride"), "a group")
            frame = replace(frame, depth=deeper(line, frame.depth, frame.trace))
        label = line.label or (self.names.fresh(frame.scope, "layer") if residual else None)
        grouped = label is not None and (count > 1 or not isinstance(line.unit, ast.Head))
        scope = frame.scope + ((label,) if grouped else ())
        for rep in range(count):
            sub = replace(frame, scope=scope + ((str(rep),) if grouped and count > 1 else ()), copies=frame.copies * count)
            first_stride = stride if rep == 0 else 1
            made, failed = len(self.nodes), self.errors.events
            if residual:
                current = self._residual(line, current, sub, first_stride)
            else:
                current = self._unit(line, current, sub, first_stride)
            if len(self.nodes) == made or self.errors.events > failed:
                break  # a copy that makes nothing, or fails, would do the same again: `[] x 10^15` ends at once
        if line.label:
            if line.label in self.labels and self.labels[line.label] != current:
                raise BuildError(line.span, f"name '{line.label}' is already used")
            self.labels[line.label] = current
        return current

    def _unit(self, line: ast.Line, current: int, frame: _Frame, stride: int) -> int:
        unit = line.unit
        if isinstance(unit, ast.Head):
            return self._head(line, current, frame)
        if isinstance(unit, ast.Group):
            return self._group(unit, current, frame, stride)
        if isinstance(unit, ast.Call):
            return self._call(unit, current, frame, stride, named=line.label is not None)
        if isinstance(unit, ast.Parallel):
            return self._parallel(unit, current, frame)
        raise AssertionError(unit)  # pragma: no cover

    def _group(self, group: ast.Group, current: int, frame: _Frame, stride: int) -> int:
        target = layers.stride_target(group.lines, self.settings.stride_on) if stride != 1 else -1
        if stride != 1 and target < 0:
            raise BuildError(group.span, f"stride {stride} given to a group with no conv to put it on")
        self.names.reserve(frame.scope, group.lines)
        for i, line in enumerate(group.lines):
            if i == target:
                line = layers.with_stride(line, stride)
            current = self._line(line, current, frame)
        return current

    def _residual(self, line: ast.Line, current: int, frame: _Frame, stride: int) -> int:
        block_in = current
        made, errors = len(self.nodes), self.errors.events
        main = self._unit(line, current, frame, stride)
        if len(self.nodes) == made:  # `[], residual` or a block of only `let`: x + x is no residual block
            if self.errors.events > errors:
                return current  # its body failed and was reported
            raise BuildError(line.span, "a residual group must contain at least one layer",
                             Note("put the block's layers inside the brackets, e.g. `[3x3 conv, 64], residual`"))
        deferred = None
        last = self.nodes[main]
        if last.implicit and isinstance(last.op, Activation) and main == len(self.nodes) - 1:
            deferred = self.nodes.pop()  # the block's last ReLU goes after the add (the paper's Fig. 2)
            main = last.inputs[0]
        short = self._add(Shortcut(stride, self.settings.shortcut), (block_in, main), line.span, frame, "downsample", implicit=True)
        out = self._add(Add(), (main, short), line.span, frame, "add", implicit=True)
        if deferred is not None:
            out = self._add(deferred.op, (out,), deferred.span, frame, "relu", implicit=True)
        return out

    def _call(self, call: ast.Call, current: int, frame: _Frame, stride: int, named: bool = False) -> int:
        block = self.blocks.get(call.name)
        if block is None:
            if (call.name.lower(),) in layers.KINDS:  # `FC (k+1)` reads as a use of a block named FC
                raise BuildError(call.span, f"'{call.name}' is a layer, not a block",
                                 Note(f"`{call.name} (...)` reads as a block use; write the number without the outer parentheses"))
            raise BuildError(call.span, f"unknown block '{call.name}'", *suggest(call.name, self.blocks))
        if call.name in frame.calls:
            chain = " -> ".join((*frame.calls, call.name))
            raise BuildError(call.span, f"block '{call.name}' uses itself ({chain}); blocks cannot be recursive",
                             Note("defined here", block.span))
        if len(call.args) != len(block.params):
            raise BuildError(call.span, f"block '{call.name}' takes {len(block.params)} argument"
                             f"{'s' if len(block.params) != 1 else ''} ({', '.join(block.params)}), but {len(call.args)} "
                             f"{'were' if len(call.args) != 1 else 'was'} given", Note("defined here", block.span))
        values = dict(frame.env.values)
        values.update({p: evaluate(a, frame.env) for p, a in zip(block.params, call.args)})
        env = Env(values)
        scope = frame.scope if named else frame.scope + (self.names.fresh(frame.scope, call.name),)
        inner = _Frame(env, scope, frame.trace + (call.span,), frame.calls + (call.name,), frame.copies, frame.depth)
        self._directives([s for s in block.body if isinstance(s, ast.Let)], inner)
        statements = block.body
        if stride != 1:
            lines = tuple(s for s in statements if isinstance(s, ast.Line))
            target = layers.stride_target(lines, self.settings.stride_on)
            statements = tuple(layers.with_stride(s, stride) if s is lines[target] else s for s in statements) \
                if target >= 0 else statements
        return self._statements(statements, current, inner)

    def _parallel(self, par: ast.Parallel, current: int, frame: _Frame) -> int:
        join = {"concat": Concat, "add": Add, "sum": Add}.get(par.join)
        if join is None:
            raise BuildError(par.span, f"unknown join '{par.join}'", Note("branches are joined by `concat { ... }` or `add { ... }`"))
        if not par.branches:
            raise BuildError(par.span, f"{par.join} needs at least one branch")
        outs = []
        for i, branch in enumerate(par.branches):
            sub = replace(frame, scope=frame.scope + (f"branch{i + 1}",))
            outs.append(current if layers.is_identity(branch) else self._line(branch, current, sub))
        return self._add(join(), tuple(outs), par.span, frame, par.join)

    # -- single layers -----------------------------------------------------------------

    def _head(self, line: ast.Line, current: int, frame: _Frame) -> int:
        ref = layers.skip_reference(line.unit)
        if ref is not None:
            return self._skip(line, ref, current, frame)
        made = layers.make(line.unit, line.options, frame.env, rules=self.settings.rules)
        for op, kind, implicit in made:
            current = self._add(op, (current,), line.span, frame, kind, implicit=implicit, label=line.label)
        last = made[-1][0]
        if self.settings.activation and takes_activation(last):
            fn, alpha = self.settings.activation
            current = self._add(Activation(fn, alpha), (current,), line.span, frame, fn, implicit=True)
        return current

    def _skip(self, line: ast.Line, ref: tuple[str, str, ast.Head], current: int, frame: _Frame) -> int:
        join, name, head = ref
        if name not in self.labels:
            at = replace(head.span, col=head.span.end_col - len(name)) if head.span.end_line == head.span.line else head.span
            raise BuildError(at, f"'{name}' is not defined before this line",
                             *suggest(name, self.labels, "named layers so far"))
        other = self.labels[name]
        opts = Options(line.options, frame.env)
        mode = "crop" if opts.flag("crop") else "pad" if opts.flag("pad") else None
        opts.finish(("crop", "pad"), f"{join} with a named layer")
        if mode:
            other = self._add(Resize(mode), (other, current), line.span, frame, mode, implicit=True)
        inputs = (other, current) if join == "concat" else (current, other)
        return self._add(Concat() if join == "concat" else Add(), inputs, line.span, frame, join)

    def _add(self, op: Op, inputs: tuple[int, ...], span: Span, frame: _Frame, kind: str, *,
             implicit: bool = False, label: str | None = None) -> int:
        if len(self.nodes) >= MAX_NODES:
            raise too_many(span, frame.trace)
        if label and not implicit and label not in frame.scope:  # a repeated label names the group
            leaf = self.names.claim(frame.scope, label, span)
        else:
            leaf = self.names.fresh(frame.scope, kind)
        name = ".".join((*frame.scope, leaf))
        node = Node(len(self.nodes), op, inputs, name, span, frame.scope, implicit, frame.trace)
        self.nodes.append(node)
        return node.id


def build(module: ast.Module, input_override: Shape | None = None) -> Graph:
    """Build the IR graph of a parsed module, or raise CnnDslError with every problem found."""
    return Builder(module, input_override).build()

