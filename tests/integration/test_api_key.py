"""The API key: writes need it once configured; reads and health stay open."""

from __future__ import annotations

import os
import subprocess

import pytest
from pydantic import SecretStr

from tests.integration.test_web_outages import NIFTY_CE, client_for, rows, simulator  # noqa: F401
from tests.stack import TICKER

KEY = "k3y-for-this-test-only"


@pytest.fixture
def client(settings, simulator):  # noqa: F811
    return client_for(settings, simulator, api_key=SecretStr(KEY))


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}])
def test_a_write_without_the_right_key_is_401_and_changes_nothing(client, settings, headers):
    answer = client.post("/subscriptions", headers=headers,
                         json={"instrument_token": NIFTY_CE, "requested_mode": "LTP"})

    assert answer.status_code == 401
    error = answer.get_json()["error"]
    assert (error["code"], error["field"]) == ("unauthorized", "X-API-Key")
    assert KEY not in answer.get_data(as_text=True)
    assert rows(settings.database_url) == 0
    assert client.delete(f"/subscriptions/{NIFTY_CE}", headers=headers).status_code == 401


def test_the_right_key_lets_a_write_through(client):
    answer = client.post("/subscriptions", headers={"X-API-Key": KEY},
                         json={"instrument_token": NIFTY_CE, "requested_mode": "LTP"})

    # Past the key check: refused only because no account worker runs here.
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "no_live_worker"


def test_reads_need_no_key(client):
    assert client.get("/subscriptions").status_code == 200
    assert client.get("/events").status_code == 200


@pytest.mark.parametrize(("command", "host_variable"),
                         [("web", "TICKER_WEB_HOST"), ("flower", "TICKER_FLOWER_HOST")])
def test_a_server_beyond_loopback_without_credentials_refuses_to_start(
        command, host_variable):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TICKER_API_KEY", "TICKER_FLOWER_BASIC_AUTH")}
    env[host_variable] = "0.0.0.0"

    done = subprocess.run([TICKER, command], env=env, capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 2
    assert "0.0.0.0" in done.stderr and "TICKER_" in done.stderr
