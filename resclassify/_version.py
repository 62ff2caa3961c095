"""resclassify's own version, in one place below everything that records it (the package, ONNX export markers)."""

__version__ = "0.1.0"
