"""The WSGI entry gunicorn serves (`ticker web`)."""

from ticker.config import Settings
from ticker.logs import configure_logging
from web import create_app

_settings = Settings()
configure_logging(_settings)
app = create_app(_settings)
