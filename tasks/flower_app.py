"""The Celery app as Flower loads it (`celery -A tasks.flower_app flower`).

Flower never sends Celery's setup_logging signal; it lets tornado put a handler of
its own on the root logger unless one is there. Configuring ours on import, as
web/wsgi.py does for gunicorn, gives Flower's lines the service's format.
"""

from tasks.app import app
from ticker.config import Settings
from ticker.logs import configure_logging

configure_logging(Settings())

__all__ = ["app"]
