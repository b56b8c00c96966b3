"""From raw network outputs to final detections: decode, NMS, mapping back to source pixels."""
