"""``python -m agent`` is the same program as ``detection-agent``."""

import sys

from agent.cli.main import main

sys.exit(main())
