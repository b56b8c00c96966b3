"""Inference backends: one module per runtime, chosen through the registry in base.py."""
