"""The API in-process, wired to real services, when parts of the system are missing.

No account worker runs here, and the database or Redis URL may point where nothing
listens: the API must say which part is missing (503), never fail with a 500.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import free_port
from ticker.config import Settings
from ticker.simulator.threaded import SimulatorThread
from web import create_app

NIFTY_CE = 13660418


@pytest.fixture(scope="module")
def simulator():
    with SimulatorThread(Settings(sim_ws_port=0, sim_rest_port=0)) as sim:
        yield sim


def client_for(settings: Settings, simulator, **changes):
    wired = settings.model_copy(
        update={"kite_rest_root": simulator.rest_url, "kite_ws_root": simulator.ws_url,
                **changes}
    )
    return create_app(wired).test_client()


def rows(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM subscriptions").fetchone()[0]


def test_health_names_every_account_whose_worker_is_not_running(settings, simulator):
    answer = client_for(settings, simulator).get("/health")

    assert answer.status_code == 503
    body = answer.get_json()
    assert body["status"] == "unhealthy"
    assert (body["database"], body["redis"]) == ("ok", "ok")
    assert body["failing"] == ["workers.sim-a", "workers.sim-b"]
    assert body["workers"]["sim-a"]["alive"] is False


def test_health_names_subscriptions_held_by_an_account_the_file_no_longer_has(
    settings, simulator, db
):
    db.execute(
        """INSERT INTO subscriptions (instrument_token, tradingsymbol, exchange, segment,
                                      requested_mode, account_id, status)
           VALUES (%s, 'NIFTY26D0824000CE', 'NFO', 'NFO-OPT', 'ltp', 'sim-gone', 'active')""",
        (NIFTY_CE,))

    body = client_for(settings, simulator).get("/health").get_json()

    assert body["unconfigured_accounts"] == {"sim-gone": 1}
    assert "accounts.sim-gone" in body["failing"]


def test_subscribing_with_no_live_worker_is_503_and_writes_nothing(settings, simulator):
    answer = client_for(settings, simulator).post(
        "/subscriptions", json={"instrument_token": NIFTY_CE, "requested_mode": "LTP"}
    )

    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "no_live_worker"
    assert rows(settings.database_url) == 0


def test_a_missing_database_is_named_in_health_and_answers(settings, simulator):
    client = client_for(
        settings, simulator,
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/ticker",
    )

    health = client.get("/health")
    listing = client.get("/subscriptions")
    metrics = client.get("/metrics").get_data(as_text=True)

    assert 'ticker_dependency_up{dependency="database"} 0.0' in metrics
    assert 'ticker_dependency_up{dependency="redis"} 1.0' in metrics
    assert "ticker_subscriptions{" not in metrics
    assert health.status_code == 503
    assert health.get_json()["database"].startswith("unavailable")
    assert "database" in health.get_json()["failing"]
    assert listing.status_code == 503
    assert listing.get_json()["error"]["code"] == "database_unavailable"


def test_a_missing_redis_is_named_in_health_and_answers(settings, simulator):
    client = client_for(settings, simulator, redis_url=f"redis://127.0.0.1:{free_port()}/0")

    health = client.get("/health")
    subscribe = client.post("/subscriptions", json={"instrument_token": NIFTY_CE})
    metrics = client.get("/metrics")

    assert metrics.status_code == 200
    assert 'ticker_dependency_up{dependency="redis"} 0.0' in metrics.get_data(as_text=True)
    assert "ticker_worker_up{" not in metrics.get_data(as_text=True)
    assert health.status_code == 503
    assert health.get_json()["redis"].startswith("unavailable")
    assert subscribe.status_code == 503
    assert subscribe.get_json()["error"]["code"] == "redis_unavailable"
    assert rows(settings.database_url) == 0


def test_an_unreachable_kite_rest_api_is_503_naming_the_instrument_list(settings, simulator):
    client = client_for(settings, simulator, kite_rest_root=f"http://127.0.0.1:{free_port()}")

    answer = client.post("/subscriptions", json={"instrument_token": NIFTY_CE})

    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "instruments_unavailable"
