"""Logging set-up for the service's entrypoints (never called by library code)."""

from __future__ import annotations

import logging

from ticker.config import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    """Plain one-line records on stderr at the configured level."""
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
