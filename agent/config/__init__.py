"""The YAML config: loading with FILE:LINE errors, and its schema by section."""
