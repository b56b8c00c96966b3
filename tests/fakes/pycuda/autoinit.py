"""Fake ``pycuda.autoinit``: like the real one, it makes a context at import time.

The agent must never import it (the inference thread owns its context); it is here so a
test can show what the real module does.
"""

import atexit

from . import driver as cuda

cuda.init()
device = cuda.Device(0)
context = device.make_context()
atexit.register(context.pop)
