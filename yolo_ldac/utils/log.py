"""One logger for yolo-ldac: a child of Ultralytics' logger, so yolo-ldac's and Ultralytics' messages share one
stream, one verbosity setting and, during a run, the run's ``log.txt``."""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("ultralytics.yolo_ldac")
