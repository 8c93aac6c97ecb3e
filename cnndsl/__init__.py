"""cnndsl: write a CNN the way the paper's table reads, check every shape, count
everything, and compile it to PyTorch or ONNX.

    >>> import cnndsl
    >>> net = cnndsl.load("architectures/vgg16.arch")
    >>> net.report.totals.params
    138357544
"""

from cnndsl.diagnostics import CnnDslError, Diagnostic
from cnndsl.pipeline import Network, compile_source, load, loads
from cnndsl.source import Source

__all__ = ["CnnDslError", "Diagnostic", "Network", "Source", "compile_source", "load", "loads"]
__version__ = "0.1.0"
