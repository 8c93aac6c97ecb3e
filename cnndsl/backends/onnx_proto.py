"""ONNX's protobuf messages, and the few constructors the emitter needs, without `import onnx`.

The `onnx` package's __init__ imports onnx.helper, which imports ml_dtypes; ml_dtypes 0.7
takes 1.2 s to import on a small machine (it registers its ufunc loops in quadratic time),
more than compiling ResNet-50 itself. The messages live in onnx/onnx_ml_pb2.py, generated
code that needs only protobuf: it is loaded here from that file, under a name of ours (so
onnx's own module namespace is left alone). Its descriptors go to protobuf's default pool,
so a later `import onnx` (the checker, the tests) gets the same message classes.
The constructors follow onnx.helper's (same fields, attributes sorted by name), so the
bytes are the same as onnx.helper's. tests/test_trust_backends.py checks that emitting
imports neither onnx.helper nor ml_dtypes.
"""

from __future__ import annotations

import importlib
import importlib.util
import numbers
import sys
from pathlib import Path

import numpy as np


def _messages():
    name = "cnndsl.backends._onnx_ml_pb2"
    if "onnx" in sys.modules:
        return importlib.import_module("onnx.onnx_ml_pb2")
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("onnx")  # finds the package without running its __init__
    if package is None or not package.submodule_search_locations:
        raise ImportError("the ONNX backend needs the onnx package (pip install onnx)")
    path = Path(list(package.submodule_search_locations)[0]) / "onnx_ml_pb2.py"
    if not path.is_file():  # another layout (a later onnx): the slow way still works
        return importlib.import_module("onnx.onnx_ml_pb2")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


pb = _messages()
AttributeProto, GraphProto, ModelProto, NodeProto = pb.AttributeProto, pb.GraphProto, pb.ModelProto, pb.NodeProto
OperatorSetIdProto, TensorProto, ValueInfoProto = pb.OperatorSetIdProto, pb.TensorProto, pb.ValueInfoProto

ELEMENT_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
                 np.dtype(np.float64): TensorProto.DOUBLE, np.dtype(np.int64): TensorProto.INT64,
                 np.dtype(np.int32): TensorProto.INT32}
# the lowest IR version that can carry each opset (onnx.helper.VERSION_TABLE)
IR_VERSIONS = {17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11, 24: 12, 25: 13, 26: 13, 27: 13, 28: 14}


def element_type(dtype) -> int:
    return ELEMENT_TYPES[np.dtype(dtype)]


def ir_version(opset: int) -> int:
    if opset in IR_VERSIONS:
        return IR_VERSIONS[opset]
    from onnx import helper  # a newer opset than this table knows: ask onnx (imports ml_dtypes)
    return helper.find_min_ir_version_for([helper.make_opsetid("", opset)])


def attribute(name: str, value) -> AttributeProto:
    """An int, float or string attribute, or a list of ints or floats (as onnx.helper makes them)."""
    attr = AttributeProto(name=name)
    if isinstance(value, numbers.Integral):
        attr.i, attr.type = int(value), AttributeProto.INT
    elif isinstance(value, numbers.Real):
        attr.f, attr.type = float(value), AttributeProto.FLOAT
    elif isinstance(value, str):
        attr.s, attr.type = value.encode("utf-8"), AttributeProto.STRING
    elif all(isinstance(v, numbers.Integral) for v in value):
        attr.ints.extend(int(v) for v in value)
        attr.type = AttributeProto.INTS
    else:
        attr.floats.extend(float(v) for v in value)
        attr.type = AttributeProto.FLOATS
    return attr


def node(op_type: str, inputs: list[str], outputs: list[str], name: str, doc_string: str = "", **attrs) -> NodeProto:
    out = NodeProto(op_type=op_type, input=inputs, output=outputs, name=name)
    if doc_string:
        out.doc_string = doc_string
    out.attribute.extend(attribute(k, v) for k, v in sorted(attrs.items()) if v is not None)
    return out


def value_info(name: str, elem_type: int, dims) -> ValueInfoProto:
    """A tensor's type and shape; a str dimension is symbolic (`N`)."""
    out = ValueInfoProto(name=name)
    tensor = out.type.tensor_type
    tensor.elem_type = elem_type
    shape = tensor.shape
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = int(d)
    return out


def model(graph: GraphProto, opset: int, **fields) -> ModelProto:
    """A model of one graph using the default domain at `opset` (onnx.helper.make_model's fields)."""
    out = ModelProto(ir_version=ir_version(opset), **fields)
    out.graph.CopyFrom(graph)
    out.opset_import.add(domain="", version=opset)
    return out


def tensor(array: np.ndarray, name: str) -> TensorProto:
    """An initializer holding `array` as raw little-endian bytes (onnx.numpy_helper.from_array's encoding)."""
    array = np.ascontiguousarray(array)
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return TensorProto(dims=array.shape, data_type=element_type(array.dtype), name=name, raw_data=data)
