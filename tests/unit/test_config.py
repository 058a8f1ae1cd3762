"""Settings refuse what no process could use, and take what Kite, kombu and redis take."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ticker.config import Settings


@pytest.mark.parametrize("url", ["amqp://guest@127.0.0.1//", "redis://127.0.0.1:6379/1",
                                 "sqla+postgresql://postgres@127.0.0.1/broker",
                                 "redis+socket:///run/redis.sock"])
def test_a_broker_url_kombu_can_read_is_taken(url):
    assert Settings(broker_url=url).celery_broker_url == url


@pytest.mark.parametrize("url", ["bogus://x", "bogus+redis://x", "127.0.0.1:5672"])
def test_a_broker_url_of_no_kombu_transport_is_refused(url):
    with pytest.raises(ValidationError, match="is not one this takes"):
        Settings(broker_url=url)


def test_a_secret_in_a_refused_url_is_not_repeated():
    with pytest.raises(ValidationError) as refused:
        Settings(redis_url="http://:hunter2@127.0.0.1:6379/0")

    assert "hunter2" not in str(refused.value.errors()[0]["msg"])


def test_a_lease_must_outlast_the_heartbeat_that_renews_it():
    with pytest.raises(ValidationError, match="must be longer than"):
        Settings(worker_lease_s=2, worker_heartbeat_s=2)
    assert Settings(worker_lease_s=2.5, worker_heartbeat_s=2).worker_lease_s == 2.5
