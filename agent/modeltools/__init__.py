"""Model tools run before deployment: darknet conversion and TensorRT builds."""
