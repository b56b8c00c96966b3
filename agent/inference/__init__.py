"""Frames to Detections: the detector, preprocessing, backends and postprocessing."""
