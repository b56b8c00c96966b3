"""Class names of a model: the label map applied when publishing or reporting detections.

Every model kind can take its names from a plain file (``model.labels``, ``detect --names``,
a darknet ``.names`` beside a cfg), so the reader lives here rather than with one format.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Union

from agent.errors import ModelError

log = logging.getLogger(__name__)


def read_names(path: Union[str, Path]) -> List[str]:
    """Class names, one per line (darknet ``.names`` / ``classes.txt``); blank lines skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read class names: {exc.strerror or exc}") from None
    return [line.strip() for line in lines if line.strip()]
