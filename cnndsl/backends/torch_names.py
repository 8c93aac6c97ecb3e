"""Names a layer may not take in PyTorch: a submodule called `forward` or `train` would
hide nn.Module's own attribute. Checked before building a module or writing source, with
the layer's span, so the user learns which label to rename and where."""

from __future__ import annotations

import keyword

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
    # private ones, methods and per-instance state: `_modules: 3x3 conv, 8` would break the module
    "_apply", "_backward_hooks", "_backward_pre_hooks", "_buffers", "_call_impl", "_compiled_call_impl",
    "_forward_hooks", "_forward_hooks_always_called", "_forward_hooks_with_kwargs", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_get_backward_hooks", "_get_backward_pre_hooks", "_get_name",
    "_is_full_backward_hook", "_load_from_state_dict", "_load_state_dict_post_hooks", "_load_state_dict_pre_hooks",
    "_maybe_warn_non_full_backward_hook", "_modules", "_named_members", "_non_persistent_buffers_set",
    "_parameters", "_register_load_state_dict_pre_hook", "_register_state_dict_hook",
    "_replicate_for_data_parallel", "_save_to_state_dict", "_slow_forward", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_version", "_wrapped_call_impl",
})


def plain(name: str) -> bool:
    """`name` may be written as `self.name` (or a keyword argument) in generated source: an ASCII
    identifier, no keyword, no leading `__` (inside a class Python would mangle it to `_Cls__name`)."""
    return name.isidentifier() and name.isascii() and not keyword.iskeyword(name) and not name.startswith("__")


def clashes(part: str) -> bool:
    """A name nn.Module uses itself: its attributes, and every `__dunder__` (Python's own)."""
    return part in MODULE_ATTRIBUTES or len(part) > 4 and part.startswith("__") and part.endswith("__")


def check_layer_names(graph: Graph) -> None:
    """Raise CnnDslError for every layer whose name (a label) would clash with nn.Module."""
    found = [(n, part) for n in graph.nodes for part in n.name.split(".") if clashes(part)]
    if found:
        raise CnnDslError(Diagnostic(n.span, f"the name '{n.name}' clashes with PyTorch's nn.Module attribute '{part}'",
                                     (Note(f"rename the label, e.g. `{part.strip('_')}_layer:`"),)) for n, part in found)
