"""Sends subscription changes to the owning account's own Celery queue."""

from __future__ import annotations

from celery import Celery

from ticker.config import Settings
from ticker.subscriptions import Mode


class CeleryTaskSender:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self._app = app
        self._settings = settings

    def subscribe(self, account_id: str, instrument_token: int, mode: Mode,
                  version: int, task_id: str, backfill: bool = False) -> None:
        # A new subscription's history follows its subscribe as a linked task,
        # which Flower shows as the subscribe's child.
        then = (
            self._app.signature(
                "ticker.backfill",
                args=[instrument_token],
                queue=self._settings.backfill_queue,
                immutable=True,
            )
            if backfill
            else None
        )
        self._app.send_task(
            "ticker.subscribe",
            args=[account_id, instrument_token, mode.value, version],
            queue=self._settings.account_queue(account_id),
            task_id=task_id,
            link=then,
        )

    def unsubscribe(self, account_id: str, instrument_token: int, version: int,
                    task_id: str) -> None:
        self._app.send_task(
            "ticker.unsubscribe",
            args=[account_id, instrument_token, version],
            queue=self._settings.account_queue(account_id),
            task_id=task_id,
        )
