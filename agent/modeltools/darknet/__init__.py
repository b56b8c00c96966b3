"""Darknet .cfg/.weights: parsing and conversion to ONNX."""
