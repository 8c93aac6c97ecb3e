"""Backends: the only code that imports torch, onnx or onnxruntime (always lazily)."""
