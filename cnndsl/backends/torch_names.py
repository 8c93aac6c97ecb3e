"""Names a layer may not take in PyTorch: a submodule called `forward` or `train` would
hide nn.Module's own attribute. Checked before building a module or writing source, with
the layer's span, so the user learns which label to rename and where."""

from __future__ import annotations

from cnndsl.diagnostics import CnnDslError, Diagnostic, Note
from cnndsl.ir.graph import Graph

# nn.Module's public attributes (tests/test_torch_backend.py checks this against torch's own).
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile", "cpu",
    "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state",
    "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers",
    "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "training", "type", "xpu", "zero_grad",
})


def check_layer_names(graph: Graph) -> None:
    """Raise CnnDslError for every layer whose name (a label) would clash with nn.Module."""
    clashes = [(n, part) for n in graph.nodes for part in n.name.split(".") if part in MODULE_ATTRIBUTES]
    if clashes:
        raise CnnDslError(Diagnostic(n.span, f"the name '{n.name}' clashes with PyTorch's nn.Module attribute '{part}'",
                                     (Note(f"rename the label, e.g. `{part}_layer:`"),)) for n, part in clashes)
