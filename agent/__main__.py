"""``python -m agent`` is the same program as ``detection-agent``."""

import sys

from .cli import main

sys.exit(main())
