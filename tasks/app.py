"""The Celery application shared by the web (to send) and the workers (to run)."""

from __future__ import annotations

from celery import Celery

app = Celery("ticker", include=["tasks.subscriptions", "tasks.backfill"])
app.config_from_object("celeryconfig")

from tasks.socket_step import AccountSocketStep  # noqa: E402 (needs `app`'s module loaded)

app.steps["worker"].add(AccountSocketStep)
