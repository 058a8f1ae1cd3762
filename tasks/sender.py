"""Sends subscription changes to the owning account's own Celery queue."""

from __future__ import annotations

from celery import Celery, Signature

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
        self._app.send_task(
            "ticker.subscribe",
            args=[account_id, instrument_token, mode.value, version],
            queue=self._settings.account_queue(account_id),
            task_id=task_id,
            link=self._backfill(instrument_token) if backfill else None,
        )

    def subscribe_batch(self, account_id: str, changes: list[tuple[int, Mode, int]],
                        task_id: str, backfill: list[int]) -> None:
        """One task for many tokens of one account; each new one's backfill linked."""
        self._app.send_task(
            "ticker.subscribe_batch",
            args=[account_id, [[token, mode.value, version] for token, mode, version
                               in changes]],
            queue=self._settings.account_queue(account_id),
            task_id=task_id,
            # One linked task fans the batch's backfills out on the backfill worker.
            link=self._app.signature(
                "ticker.backfill_many",
                args=[backfill],
                queue=self._settings.backfill_queue,
                immutable=True,
            ) if backfill else None,
        )

    def _backfill(self, instrument_token: int) -> Signature:
        return self._app.signature(
            "ticker.backfill",
            args=[instrument_token],
            queue=self._settings.backfill_queue,
            immutable=True,
        )

    def unsubscribe(self, account_id: str, instrument_token: int, version: int,
                    task_id: str) -> None:
        self._app.send_task(
            "ticker.unsubscribe",
            args=[account_id, instrument_token, version],
            queue=self._settings.account_queue(account_id),
            task_id=task_id,
        )
