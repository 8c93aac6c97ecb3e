"""The IR: plain, frozen data. It knows nothing of lark, torch or onnx."""
