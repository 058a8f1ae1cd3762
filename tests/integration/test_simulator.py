"""The simulator on real sockets, driven by the official kiteconnect client.

KiteTicker runs on Twisted's reactor, which is global to a process and cannot be
restarted, so every ticker scenario runs in a subprocess: this very file, run as
a script (see `probe` at the bottom), connects the tickers a plan describes,
performs its timed actions and prints what the client saw as JSON.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
import yaml
from kiteconnect import KiteConnect
from kiteconnect.exceptions import InputException, NetworkException, TokenException

from tests.conftest import SAMPLES_DIR
from ticker.config import Settings
from ticker.simulator import SimulatorThread
from ticker.simulator.chain import IST

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TICK_INTERVAL_S = 0.1
CALL = 13660418
PUT = 13660674
INDEX = 256265
FUTURE = 14483714


@pytest.fixture
def accounts_file(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "accounts": [
                    {
                        "id": "alpha",
                        "api_key": "key_alpha",
                        "access_token": "tok_alpha",
                    },
                    {
                        "id": "beta",
                        "api_key": "key_beta",
                        "access_token": "tok_beta",
                        "max_instruments_per_connection": 5,
                    },
                ]
            }
        )
    )
    return path


@pytest.fixture
def settings(accounts_file):
    return Settings(
        sim_host="127.0.0.1",
        sim_ws_port=0,
        sim_rest_port=0,
        sim_tick_interval_s=TICK_INTERVAL_S,
        accounts_file=accounts_file,
        sim_instruments_file=None,
    )


@pytest.fixture
def sim(settings):
    with SimulatorThread(settings) as running:
        yield running


@pytest.fixture
def kite(sim):
    return client(sim.rest_url)


def client(rest_url: str, api_key="key_alpha", access_token="tok_alpha"):
    return KiteConnect(api_key, access_token=access_token, root=rest_url.rstrip("/"))


def run_probe(ws_url: str, connections: list[dict], seconds: float) -> list[dict]:
    """Run the tickers of a plan in a fresh process; what each client saw."""
    done = subprocess.run(
        probe_command(ws_url, connections, seconds),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        env=probe_env(),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def start_probe(ws_url: str, connections: list[dict], seconds: float):
    """The same, left running; its JSON report comes on stdout at the end."""
    return subprocess.Popen(
        probe_command(ws_url, connections, seconds),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=probe_env(),
    )


def probe_command(ws_url: str, connections: list[dict], seconds: float) -> list[str]:
    plan = {"root": ws_url.rstrip("/"), "connections": connections, "seconds": seconds}
    return [sys.executable, __file__, json.dumps(plan)]


def probe_env() -> dict[str, str]:
    # Run as a script, this file needs the project root on the path for imports.
    path = os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])
    )
    return {**os.environ, "PYTHONPATH": path}


def ticker(
    api_key="key_alpha", access_token="tok_alpha", actions=(), *, every_connect=True
) -> dict:
    """One KiteTicker of a probe plan.

    Its actions run after each connect, as when an app subscribes in on_connect,
    or with `every_connect=False` after the first only, leaving reconnects to the
    client's own resubscribe.
    """
    return {
        "api_key": api_key,
        "access_token": access_token,
        "actions": list(actions),
        "every_connect": every_connect,
    }


def debug_get(sim, path: str):
    response = requests.get(sim.rest_url + "_sim/" + path, timeout=5)
    response.raise_for_status()
    return response.json()


# -- ticker ----------------------------------------------------------------


def test_ticks_arrive_only_for_subscribed_tokens_each_in_its_mode(sim):
    modes = {CALL: "quote", PUT: "ltp", INDEX: "full", FUTURE: "full"}
    packet_lengths = {CALL: 44, PUT: 8, INDEX: 32, FUTURE: 184}
    actions = [
        [0, "subscribe", [CALL, PUT, INDEX, FUTURE, 999_999]],
        [0, "mode", "ltp", [PUT]],
        [0, "mode", "full", [INDEX, FUTURE]],
    ]

    [seen] = run_probe(sim.ws_url, [ticker(actions=actions)], seconds=1.5)

    assert seen["connects"] == 1 and not seen["errors"]
    ticks = seen["ticks"]
    assert {t["instrument_token"] for t in ticks} == set(modes)
    settled = [t for t in ticks if t["t"] > 0.3]
    assert len(settled) >= 4 * 5
    for tick in settled:
        token = tick["instrument_token"]
        assert tick["mode"] == modes[token], tick
        assert tick["tradable"] is (token != INDEX)
        assert tick["last_price"] > 0
        if "ohlc" in tick:
            assert tick["ohlc"]["low"] <= tick["last_price"] <= tick["ohlc"]["high"]
    index_prices = [t["last_price"] for t in ticks if t["instrument_token"] == INDEX]
    assert all(21_000 < p < 27_000 for p in index_prices)
    future = [t for t in settled if t["instrument_token"] == FUTURE]
    volumes = [t["volume_traded"] for t in future]
    assert volumes == sorted(volumes) and volumes[0] < volumes[-1]
    assert len(future[-1]["depth"]["buy"]) == len(future[-1]["depth"]["sell"]) == 5
    lengths = {(token, length) for t, token, length in seen["packets"] if t > 0.3}
    assert lengths == set(packet_lengths.items())


def test_the_debug_api_shows_each_message_the_client_sent(sim):
    actions = [[0, "subscribe", [CALL]], [0, "mode", "full", [CALL]]]
    probe = start_probe(sim.ws_url, [ticker(actions=actions)], seconds=5.0)
    try:
        connections = wait_for(
            lambda: [
                c
                for c in debug_get(sim, "connections")
                if c["subscriptions"] == {str(CALL): "full"} and c["ticks_sent"]
            ]
        )
    finally:
        probe.kill()
        probe.communicate(timeout=30)

    [connection] = connections
    assert connection["api_key"] == "key_alpha"
    assert connection["account_id"] == "alpha"
    assert connection["subscriptions"] == {str(CALL): "full"}
    assert [m["message"] for m in connection["messages"]] == [
        {"a": "subscribe", "v": [CALL]},
        {"a": "mode", "v": ["full", [CALL]]},
    ]
    assert connection["messages"][0]["text"] == f'{{"a": "subscribe", "v": [{CALL}]}}'
    assert connection["frames_sent"] >= 1
    stats = debug_get(sim, "stats")
    assert stats["ticks_sent"] >= connection["ticks_sent"]


def test_a_wrong_access_token_is_refused_with_403(sim):
    [seen] = run_probe(
        sim.ws_url,
        [ticker(access_token="stale", actions=[[0, "subscribe", [CALL]]])],
        seconds=1.0,
    )

    assert seen["connects"] == 0
    assert seen["ticks"] == []
    assert any("403 - Forbidden" in reason for _, reason in seen["errors"]), seen[
        "errors"
    ]
    assert debug_get(sim, "stats")["refused_forbidden"] >= 1


def test_unsubscribe_stops_ticks_for_that_token_only(sim):
    actions = [[0, "subscribe", [CALL, PUT]], [0.6, "unsubscribe", [PUT]]]

    [seen] = run_probe(sim.ws_url, [ticker(actions=actions)], seconds=1.5)

    put_times = [t["t"] for t in seen["ticks"] if t["instrument_token"] == PUT]
    call_times = [t["t"] for t in seen["ticks"] if t["instrument_token"] == CALL]
    assert put_times and max(put_times) < 0.6 + 2 * TICK_INTERVAL_S
    assert max(call_times) > 1.2


def test_subscribing_past_the_limit_sends_an_error_and_keeps_the_connection(sim):
    tokens = [CALL + (i << 8) for i in range(8)]
    actions = [[0, "subscribe", tokens]]

    [seen] = run_probe(
        sim.ws_url, [ticker("key_beta", "tok_beta", actions)], seconds=1.2
    )

    assert seen["errors"] == [[0, "Can't subscribe to more than 5 instruments."]]
    assert seen["closes"] == [] and seen["connects"] == 1
    late = {t["instrument_token"] for t in seen["ticks"] if t["t"] > 0.6}
    assert late == set(tokens[:5])


def test_malformed_text_gets_an_error_frame_and_the_connection_stays_up(sim):
    actions = [[0, "raw", "{not json"], [0.2, "subscribe", [CALL]]]

    [seen] = run_probe(sim.ws_url, [ticker(actions=actions)], seconds=1.0)

    [[code, message]] = seen["errors"]
    assert code == 0 and message.startswith("Invalid message")
    assert seen["connects"] == 1 and seen["closes"] == []
    assert any(t["instrument_token"] == CALL for t in seen["ticks"])


def test_a_fourth_connection_on_one_api_key_is_refused_with_429(sim):
    four = [ticker(actions=[[0, "subscribe", [CALL]]]) for _ in range(4)]

    seen = run_probe(sim.ws_url, [*four, ticker("key_beta", "tok_beta")], seconds=1.5)

    alpha = seen[:4]
    assert sorted(s["connects"] for s in alpha) == [0, 1, 1, 1]
    [refused] = [s for s in alpha if s["connects"] == 0]
    assert any("429" in reason for _, reason in refused["errors"]), refused["errors"]
    assert all(s["ticks"] for s in alpha if s["connects"])
    assert seen[4]["connects"] == 1, "another api_key has its own three connections"
    assert debug_get(sim, "stats")["refused_too_many"] >= 1


def test_stopping_the_simulator_closes_connections_with_code_1000(settings):
    sim = SimulatorThread(settings).start()
    connections = [ticker(actions=[[0, "subscribe", [CALL]]])]
    probe = start_probe(sim.ws_url, connections, seconds=2.0)
    try:
        wait_for(lambda: [c for c in debug_get(sim, "connections") if c["ticks_sent"]])
    finally:
        sim.stop()
    out, _ = probe.communicate(timeout=30)

    [seen] = json.loads(out)
    assert seen["closes"][0][0] == 1000, seen["closes"]


def test_connections_with_nothing_subscribed_get_heartbeats(sim):
    [seen] = run_probe(sim.ws_url, [ticker()], seconds=2.6)

    assert seen["connects"] == 1 and seen["ticks"] == []
    assert seen["heartbeats"] >= 2


# -- REST ------------------------------------------------------------------


def test_instruments_lists_the_universe_and_filters_by_exchange(sim, kite):
    everything = kite.instruments()
    nfo = kite.instruments("NFO")

    assert len(everything) == len(sim.simulator.universe)
    [call] = [i for i in everything if i["instrument_token"] == CALL]
    assert (
        call["name"] == "NIFTY"
        and call["instrument_type"] == "CE"
        and call["strike"] == 24000.0
    )
    assert {i["exchange"] for i in nfo} == {"NFO"}
    assert len(nfo) == len(everything) - 1


def test_historical_minute_candles_with_oi_lie_in_market_hours(kite):
    args = (CALL, datetime(2025, 6, 2, 9, 0), datetime(2025, 6, 3, 18, 0), "minute")

    candles = kite.historical_data(*args, oi=True)

    assert len(candles) == 2 * 375
    for candle in candles:
        assert candle["date"].utcoffset().total_seconds() == 5.5 * 3600
        assert (9, 15) <= (candle["date"].hour, candle["date"].minute) <= (15, 29)
        assert candle["low"] <= min(candle["open"], candle["close"])
        assert candle["high"] >= max(candle["open"], candle["close"])
        assert candle["oi"] > 0
    assert kite.historical_data(*args, oi=True) == candles
    assert "oi" not in kite.historical_data(*args)[0]


def test_historical_refuses_bad_requests_like_kite(settings):
    # Four requests in a row would trip Kite's 3/s limit; lift it here.
    with SimulatorThread(settings, historical_per_s=math.inf) as sim:
        refuses_bad_requests(client(sim.rest_url))


def refuses_bad_requests(kite: KiteConnect) -> None:
    with pytest.raises(InputException, match="invalid token") as refused:
        kite.historical_data(
            12345, "2025-06-02 09:15:00", "2025-06-02 15:30:00", "minute"
        )
    assert refused.value.code == 400
    with pytest.raises(InputException, match="invalid interval"):
        kite.historical_data(
            CALL, "2025-06-02 09:15:00", "2025-06-02 15:30:00", "2minute"
        )
    with pytest.raises(InputException, match="invalid from date"):
        kite.historical_data(CALL, "yesterday", "2025-06-02 15:30:00", "minute")
    with pytest.raises(InputException, match="max limit"):
        kite.historical_data(
            CALL, "2025-01-01 09:15:00", "2025-06-02 15:30:00", "minute"
        )


def test_rest_refuses_a_wrong_token_with_token_exception(sim):
    stale = KiteConnect(
        "key_alpha", access_token="stale", root=sim.rest_url.rstrip("/")
    )

    with pytest.raises(
        TokenException, match=re.escape("Incorrect `api_key` or `access_token`.")
    ) as refused:
        stale.instruments()
    assert refused.value.code == 403
    with pytest.raises(TokenException):
        stale.historical_data(
            CALL, "2025-06-02 09:15:00", "2025-06-02 15:30:00", "minute"
        )


# -- historical: rate limit, record, consistency with the ticks ------------

MONDAY_SESSION = ("2025-06-02 09:15:00", "2025-06-02 15:30:00")


def fetch(kite: KiteConnect, token: int = CALL) -> int | str:
    """The number of candles, or the status code of a NetworkException."""
    try:
        return len(kite.historical_data(token, *MONDAY_SESSION, "minute"))
    except NetworkException as exc:
        assert str(exc) == "Too many requests"
        return exc.code


def test_a_burst_past_three_a_second_gets_429_on_that_api_key_only(sim):
    burst = [client(sim.rest_url) for _ in range(10)]

    with ThreadPoolExecutor(len(burst)) as pool:
        answers = list(pool.map(fetch, burst))
    other_key = fetch(client(sim.rest_url, "key_beta", "tok_beta"))

    assert sorted(answers) == [375] * 3 + [429] * 7
    assert other_key == 375
    record = debug_get(sim, "historical")
    alpha = [r for r in record if r["api_key"] == "key_alpha"]
    accepted = [r["at"] for r in alpha if r["status"] == 200]
    assert max(r["at"] for r in alpha) - min(accepted) < 1.0, "not one burst"

    # Once the accepted requests have left the window, three more get through.
    time.sleep(max(0.0, max(accepted) + 1.05 - time.time()))
    again = [fetch(client(sim.rest_url)) for _ in range(4)]

    assert again == [375, 375, 375, 429]


def test_the_debug_record_shows_every_historical_request_and_its_answer(sim):
    kite = client(sim.rest_url)
    for _ in range(4):
        fetch(kite, INDEX)
    with pytest.raises(InputException):
        client(sim.rest_url, "key_beta", "tok_beta").historical_data(
            12345, *MONDAY_SESSION, "minute", oi=True
        )
    with pytest.raises(TokenException):
        client(sim.rest_url, access_token="stale").historical_data(
            CALL, *MONDAY_SESSION, "day"
        )

    record = debug_get(sim, "historical")
    stats = debug_get(sim, "stats")

    assert [(r["api_key"], r["status"], r["candles"]) for r in record] == [
        *[("key_alpha", 200, 375)] * 3,
        ("key_alpha", 429, 0),
        ("key_beta", 400, 0),
        ("key_alpha", 403, 0),
    ]
    assert record[0] == {
        "at": record[0]["at"],
        "api_key": "key_alpha",
        "instrument_token": INDEX,
        "interval": "minute",
        "from": MONDAY_SESSION[0],
        "to": MONDAY_SESSION[1],
        "oi": False,
        "status": 200,
        "candles": 375,
    }
    assert abs(record[0]["at"] - time.time()) < 10
    assert [r["at"] for r in record] == sorted(r["at"] for r in record)
    assert (record[4]["instrument_token"], record[4]["oi"]) == (12345, True)
    assert record[5]["interval"] == "day"
    assert stats["historical_requests"] == 6
    assert stats["historical_by_status"] == {"200": 3, "400": 1, "403": 1, "429": 1}
    assert stats["historical_per_s"] == 3

    cleared = requests.delete(sim.rest_url + "_sim/historical", timeout=5)

    assert cleared.status_code == 204
    assert debug_get(sim, "historical") == []
    assert debug_get(sim, "stats")["historical_by_status"] == {}


def test_the_historical_rate_is_a_simulator_option(settings):
    with SimulatorThread(settings, historical_per_s=1) as sim:
        kite = client(sim.rest_url)

        answers = [fetch(kite) for _ in range(2)]

    assert answers == [375, 429]


def test_the_latest_candle_closes_near_the_price_the_ticker_streams(sim, kite):
    tokens = [INDEX, FUTURE, CALL]
    [seen] = run_probe(
        sim.ws_url, [ticker(actions=[[0, "subscribe", tokens]])], seconds=1.0
    )
    streamed = {t["instrument_token"]: t["last_price"] for t in seen["ticks"]}
    now = datetime.now(IST).replace(tzinfo=None, microsecond=0)
    # Five days back always holds a session, whatever the day and hour.
    since = now - timedelta(days=5)

    for token in tokens:
        candle = kite.historical_data(token, since, now, "minute")[-1]
        # Ticks start at the instrument's last price and so does the latest
        # session; options wander wider than the index and futures.
        tolerance = 0.08 if token == CALL else 0.03
        assert candle["close"] == pytest.approx(streamed[token], rel=tolerance), token
        assert candle["date"].replace(tzinfo=None) <= now


def test_a_loaded_kite_dump_is_served_as_the_universe(settings):
    dump = SAMPLES_DIR / "instruments_all.csv"
    loaded = settings.model_copy(update={"sim_instruments_file": dump})

    with SimulatorThread(loaded) as sim:
        kite = KiteConnect(
            "key_alpha", access_token="tok_alpha", root=sim.rest_url.rstrip("/")
        )
        served = kite.instruments()
        body = requests.get(
            sim.rest_url + "instruments",
            headers={"Authorization": "token key_alpha:tok_alpha"},
            timeout=5,
        )

    assert served == kite._parse_instruments(dump.read_bytes())
    assert body.content == dump.read_bytes()
    assert body.headers["Content-Type"].startswith("text/csv")


def test_python_m_ticker_simulator_serves_until_sigterm(accounts_file):
    ws_port, rest_port = free_port(), free_port()
    env = {
        **os.environ,
        "TICKER_SIM_WS_PORT": str(ws_port),
        "TICKER_SIM_REST_PORT": str(rest_port),
        "TICKER_ACCOUNTS_FILE": str(accounts_file),
        "TICKER_LOG_LEVEL": "INFO",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "ticker.simulator"],
        env=env,
        cwd=PROJECT_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        listening = next(
            line for line in server.stderr if "simulator listening" in line
        )
        kite = KiteConnect(
            "key_alpha", access_token="tok_alpha", root=f"http://127.0.0.1:{rest_port}"
        )
        assert any(i["instrument_token"] == CALL for i in kite.instruments("NFO"))
    finally:
        server.send_signal(signal.SIGTERM)
        _, rest = server.communicate(timeout=15)

    assert f"ws=ws://127.0.0.1:{ws_port}/" in listening
    assert f"rest=http://127.0.0.1:{rest_port}/" in listening
    assert server.returncode == 0, rest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s} s")


# -- the probe: runs in its own process ------------------------------------


def probe(plan: dict) -> list[dict]:
    """Connect the plan's tickers, run their actions, report what each saw.

    Each connection's actions are [seconds after connect, action, *args] with
    action one of subscribe, unsubscribe, mode (mode, tokens), raw (text) and
    close (code, reason). Besides what each client saw, the report holds wall
    clock times, to set beside the simulator's: each connect, each binary frame
    (heartbeats included) and each error or close event.
    """
    from kiteconnect import KiteTicker
    from twisted.internet import reactor

    started = time.monotonic()
    seen: list[dict] = []
    tickers = []

    def perform(ws, action, args):
        if action == "subscribe":
            ws.subscribe(*args)
        elif action == "unsubscribe":
            ws.unsubscribe(*args)
        elif action == "mode":
            ws.set_mode(*args)
        elif action == "raw":
            ws.ws.sendMessage(args[0].encode())
        elif action == "close":
            ws.close(*args)

    for spec in plan["connections"]:
        record = {
            "connects": 0,
            "ticks": [],
            "packets": [],
            "errors": [],
            "closes": [],
            "heartbeats": 0,
            "connected_at": [],
            "frames_at": [],
            "events": [],
        }
        seen.append(record)
        kws = KiteTicker(spec["api_key"], spec["access_token"], root=plan["root"])
        connected_at = [started]

        def on_connect(
            ws, response, spec=spec, record=record, connected_at=connected_at
        ):
            record["connects"] += 1
            record["connected_at"].append(time.time())
            connected_at[0] = time.monotonic()
            if record["connects"] > 1 and not spec.get("every_connect", True):
                return
            for at, action, *args in spec["actions"]:
                reactor.callLater(at, perform, ws, action, args)

        def on_ticks(ws, ticks, record=record, connected_at=connected_at):
            now = time.monotonic() - connected_at[0]
            record["ticks"].extend({"t": now, **tick} for tick in ticks)

        def on_message(
            ws, payload, is_binary, record=record, connected_at=connected_at
        ):
            if not is_binary:
                return
            record["frames_at"].append(time.time())
            if len(payload) == 1:
                record["heartbeats"] += 1
                return
            # The client hides packet lengths, so split the frame here too.
            now = time.monotonic() - connected_at[0]
            offset = 2
            for _ in range(struct.unpack_from(">H", payload)[0]):
                length = struct.unpack_from(">H", payload, offset)[0]
                token = struct.unpack_from(">I", payload, offset + 2)[0]
                record["packets"].append([now, token, length])
                offset += 2 + length

        kws.on_connect = on_connect
        kws.on_ticks = on_ticks
        kws.on_message = on_message

        def on_error(ws, code, reason, record=record):
            record["errors"].append([code, str(reason)])
            record["events"].append([time.time(), "error", code, str(reason)])

        def on_close(ws, code, reason, record=record):
            record["closes"].append([code, str(reason)])
            record["events"].append([time.time(), "close", code, str(reason)])

        kws.on_error = on_error
        kws.on_close = on_close
        tickers.append(kws)

    tickers[0].connect(threaded=True)
    for kws in tickers[1:]:
        reactor.callFromThread(kws.connect, threaded=True)
    time.sleep(plan["seconds"])

    # Snapshot before closing, so our own close does not show up as an event.
    report = json.loads(json.dumps(seen, default=str))
    for kws in tickers:
        reactor.callFromThread(kws.close)
    time.sleep(0.2)
    return report


if __name__ == "__main__":
    report = probe(json.loads(sys.argv[1]))
    sys.stdout.write(json.dumps(report))
    sys.stdout.flush()
    # Skip interpreter teardown: the reactor thread would complain on the way out.
    os._exit(0)
