"""Fake ``tensorrt`` and ``pycuda`` packages for tests on machines without an NVIDIA GPU.

Importable only through the fixtures in tests/unit/backends/conftest.py, which put this
folder on ``sys.path`` for one test and take it off again: no other test can import a fake
``tensorrt`` by accident.
"""
