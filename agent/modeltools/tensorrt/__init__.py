"""TensorRT engine building on the device (FP16/INT8, EfficientNMS)."""
