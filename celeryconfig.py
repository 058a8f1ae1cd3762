"""Celery settings for every process of the ticker service (lowercase, from env)."""

from ticker.config import Settings

_settings = Settings()

broker_url = _settings.celery_broker_url
broker_connection_retry_on_startup = True
broker_transport_options = {
    **_settings.broker_transport_options,
    "visibility_timeout": _settings.broker_visibility_timeout_s,
}
# Results are never read back: the outcome of a task is its event on Redis.
task_ignore_result = True

task_serializer = "json"
accept_content = ["json"]
timezone = "Asia/Kolkata"
enable_utc = True

# A task is acknowledged only after it ran, and put back when its worker dies
# mid-task, so a subscribe is never lost; tasks are idempotent, which makes the
# possible second run harmless.
task_acks_late = True
task_reject_on_worker_lost = True
# One task at a time, in queue order: an account's changes apply as they came.
worker_prefetch_multiplier = 1

# Flower builds its views from these events.
worker_send_task_events = True
task_send_sent_event = True

# Backfill work has a queue and worker of its own, away from the socket workers.
task_routes = {
    "ticker.backfill": {"queue": _settings.backfill_queue},
    "ticker.backfill_gaps": {"queue": _settings.backfill_queue},
    "ticker.backfill_many": {"queue": _settings.backfill_queue},
}
beat_schedule = {
    "backfill-gaps": {
        "task": "ticker.backfill_gaps",
        "schedule": _settings.backfill_gap_fill_every_s,
    },
}
beat_schedule_filename = str(_settings.beat_schedule_file)
