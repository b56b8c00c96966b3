"""Fake pycuda (see tests/fakes/pycuda/driver.py)."""

VERSION = (2024, 1, 2)
VERSION_STATUS = ""
VERSION_TEXT = "2024.1.2"
