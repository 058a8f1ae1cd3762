"""gunicorn's own loggers in the service's format (`--logger-class`).

gunicorn gives its error and access loggers handlers of its own that do not
propagate, so configuring the root logger leaves its master's and access lines
plain; this class restyles them once gunicorn has set them up.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from ticker.config import Settings
from ticker.logs import restyle_handlers


class GunicornLogger(Logger):  # type: ignore[misc]
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        settings = Settings()
        restyle_handlers(self.error_log, settings)
        restyle_handlers(self.access_log, settings)
