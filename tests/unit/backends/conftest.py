"""Fixtures for the backend tests: see backend_fixtures.py (shared with tests/unit/test_engine.py)."""

from backend_fixtures import dynamic_model, fake_gpu, fp16_model, generation, images, model_path  # noqa: F401
