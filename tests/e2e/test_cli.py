"""The operator commands of `ticker`, run as an operator runs them: the installed
command, in a subprocess, with the stack's environment, against a running stack.

Token rotation revokes a simulated account's token, so it runs on a stack of its own
(as test_socket_faults does), leaving the session's stack untouched.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest
import redis
import requests
from kiteconnect import KiteConnect

from tests.conftest import free_port
from tests.e2e.test_backfill import assert_stored_only_what_was_missing, start_times
from tests.e2e.test_socket_faults import live_connections, sim, wait_until, worker_state
from tests.e2e.test_subscriptions import EVENT_TIMEOUT_S, event_for, nfo_tokens
from tests.e2e.test_workers import worker_process
from tests.listen import ChannelListener
from tests.stack import TICKER, Stack, running_stack
from ticker import access_tokens
from ticker.config import EXAMPLE_ACCOUNTS_FILE

pytestmark = pytest.mark.timeout(240)

UNKNOWN_TOKEN = 4_000_000_000  # a valid token number the simulator does not list
CLI_TIMEOUT_S = 60


def ticker(
    env: dict[str, str],
    *args: str,
    stdin: str | None = None,
    timeout_s: float = CLI_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TICKER, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ticker: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def streaming(stack: Stack):
    """A token subscribed through `ticker subscribe`, live, with the CLI's answer."""
    [token] = nfo_tokens(stack, 1, skip=700)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        result = ticker(
            stack.env,
            "subscribe",
            str(token),
            "--mode",
            "ltp",
            "--client-id",
            "cli-desk",
            "--json",
        )
        assert result.returncode == 0, result.stderr
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)
    yield token, json.loads(result.stdout)
    requests.delete(
        f"{stack.api}/subscriptions/{token}",
        params={"client_id": "cli-desk"},
        timeout=10,
    )


def test_subscribe_by_token_answers_the_pending_subscription(streaming):
    token, answer = streaming

    assert answer["instrument_token"] == token
    assert answer["requested_mode"] == "LTP"
    assert answer["status"] == "pending"
    assert answer["account_id"] in ("sim-a", "sim-b")


def test_subscribe_by_tradingsymbol_names_the_same_instrument(stack):
    [token] = nfo_tokens(stack, 1, skip=740)
    kite = KiteConnect("simkey_a", access_token="simtoken_a", root=stack.sim_rest)
    [row] = [r for r in kite.instruments("NFO") if r["instrument_token"] == token]

    result = ticker(
        stack.env,
        "subscribe",
        row["tradingsymbol"].lower(),
        "--exchange",
        "nfo",
        "--json",
    )
    requests.delete(f"{stack.api}/subscriptions/{row['instrument_token']}", timeout=10)

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["instrument_token"] == row["instrument_token"]
    assert answer["tradingsymbol"] == row["tradingsymbol"]


def test_ls_lists_the_subscription_with_its_requester(stack, streaming):
    token, answer = streaming

    listed = ticker(stack.env, "ls", "--status", "active", "--json")
    table = ticker(stack.env, "ls", "--account", answer["account_id"])

    assert listed.returncode == 0, listed.stderr
    [row] = [
        s
        for s in json.loads(listed.stdout)["subscriptions"]
        if s["instrument_token"] == token
    ]
    assert row["status"] == "active" and row["account_id"] == answer["account_id"]
    assert row["requesters"] == [{"client_id": "cli-desk", "requested_mode": "LTP"}]
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:2] == ["token", "tradingsymbol"]
    assert any(
        line.split()[0] == str(token) and "cli-desk:LTP" in line
        for line in table.stdout.splitlines()
    )


def test_accounts_reports_each_account_and_the_one_in_use(stack, streaming):
    _, answer = streaming

    result = ticker(stack.env, "accounts", "--json")

    assert result.returncode == 0, result.stderr
    accounts = {a["account_id"]: a for a in json.loads(result.stdout)["accounts"]}
    assert set(accounts) == {"sim-a", "sim-b"}
    assert accounts[answer["account_id"]]["used"] >= 1
    assert all(a["worker_alive"] for a in accounts.values())


def test_events_replays_the_subscription_created(stack, streaming):
    token, _ = streaming

    result = ticker(stack.env, "events", "--token", str(token), "--json")

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event_type"] for e in events][:1] == ["subscription_created"]
    assert all(e["instrument_token"] == token for e in events)


def test_events_follow_prints_new_events_until_interrupted(stack):
    [token] = nfo_tokens(stack, 1, skip=710)
    last = ticker(stack.env, "events", "--json").stdout.splitlines()
    after = json.loads(last[-1])["stream_id"] if last else "0"
    follower = subprocess.Popen(
        [
            TICKER,
            "events",
            "--follow",
            "--after",
            after,
            "--interval",
            "0.2",
            "--token",
            str(token),
        ],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert ticker(stack.env, "subscribe", str(token)).returncode == 0
        assert follower.stdout is not None
        line = follower.stdout.readline()  # blocks until the created event is printed

        follower.send_signal(signal.SIGINT)
        code = follower.wait(10)
    finally:
        follower.kill()
        requests.delete(f"{stack.api}/subscriptions/{token}", timeout=10)

    assert f" subscription_created {token} " in line
    assert code == 0
    assert "Traceback" not in follower.stderr.read()


def test_ticks_prints_the_tokens_ticks_and_stops_at_count(stack, streaming):
    token, _ = streaming

    result = ticker(
        stack.env, "ticks", str(token), "--count", "2", "--timeout", "20", "--json"
    )

    assert result.returncode == 0, result.stderr
    ticks = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(ticks) == 2
    assert {t["instrument_token"] for t in ticks} == {token}


def test_ticks_of_a_silent_token_give_up_with_1(stack):
    result = ticker(
        stack.env, "ticks", str(UNKNOWN_TOKEN), "--count", "1", "--timeout", "1.5"
    )

    assert "is it subscribed" in assert_one_line_failure(result, 1)


def test_backfill_queues_the_gap_fill_task_and_waits_for_its_outcome(stack):
    [token] = nfo_tokens(stack, 1, skip=720)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        assert ticker(stack.env, "subscribe", str(token)).returncode == 0
        # The subscription's own backfill first, so the one below is told apart.
        events.wait_for(event_for(token, "backfill_completed"), 60.0)
        before = start_times(stack, token)

        result = ticker(stack.env, "backfill", str(token), "--wait", "60", "--json")
        completed = events.matching(event_for(token, "backfill_completed"))
    requests.delete(f"{stack.api}/subscriptions/{token}", timeout=10)

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "backfill_completed"
    # The first one stored them all: this one adds a minute that finished since, if any.
    assert_stored_only_what_was_missing(stack, token, before, outcome)
    assert len(completed) == 2


def test_backfill_of_an_unsubscribed_token_is_refused_with_1(stack):
    result = ticker(stack.env, "backfill", str(UNKNOWN_TOKEN))

    assert "404" in assert_one_line_failure(result, 1)


def test_unsubscribe_removes_and_a_second_time_exits_1(stack):
    [token] = nfo_tokens(stack, 1, skip=730)
    with ChannelListener(stack.redis_url, stack.events_channel) as events:
        assert (
            ticker(
                stack.env, "subscribe", str(token), "--client-id", "cli-x"
            ).returncode
            == 0
        )
        events.wait_for(event_for(token, "subscription_created"), EVENT_TIMEOUT_S)

        first = ticker(stack.env, "unsubscribe", str(token), "--client-id", "cli-x")
        events.wait_for(event_for(token, "subscription_removed"), EVENT_TIMEOUT_S)
    second = ticker(stack.env, "unsubscribe", str(token), "--client-id", "cli-x")
    backfill = ticker(stack.env, "backfill", str(token))

    assert first.returncode == 0, first.stderr
    assert first.stdout.split(":")[-1].strip() == "removing"
    assert "subscription_not_found" in assert_one_line_failure(second, 1)
    assert "no longer subscribed" in assert_one_line_failure(backfill, 1)


def test_an_unknown_token_exits_1_with_one_line(stack):
    result = ticker(stack.env, "subscribe", str(UNKNOWN_TOKEN))

    assert "unknown_instrument" in assert_one_line_failure(result, 1)


def test_an_unreachable_api_exits_3(stack):
    nowhere = f"http://127.0.0.1:{free_port()}"

    results = [
        ticker(stack.env, *args, "--api", nowhere)
        for args in (["ls"], ["subscribe", "13660418"], ["accounts"])
    ]

    for result in results:
        assert "cannot reach the API" in assert_one_line_failure(result, 3)


def test_a_bad_option_is_a_usage_error(stack):
    result = ticker(stack.env, "subscribe", "1", "--mode", "loud")

    assert "--mode" in assert_one_line_failure(result, 2)


@pytest.mark.parametrize(
    ("args", "says"),
    [(("subscribe", "-5"), "-5 is not an instrument token"),
     (("unsubscribe", "abc"), "'abc' is not an instrument token"),
     (("ticks", "99999999999"), "'99999999999' is not an instrument token"),
     (("ticks", "²"), "'²' is not an instrument token"),
     (("subscribe", "99999999999"), "'99999999999' is not an instrument token"),
     (("events", "--token", "0"), "'0' is not an instrument token"),
     (("--json", "ls"), "options go after the command, as in `ticker ls --json`"),
     (("ls", "--colour"), "No such option '--colour' (see `ticker ls --help`)"),
     (("nosuch",), "No such command 'nosuch'")],
    ids=["negative", "letters", "over 32 bits", "superscript digit", "subscribe over 32 bits",
         "zero", "option first", "unknown option",
         "unknown command"],
)
def test_a_mistyped_command_line_is_one_line_saying_what_to_do(args, says):
    # Refused while parsing, before any service is asked: no stack needed.
    result = ticker({"PATH": "/usr/bin:/bin"}, *args)

    assert says in assert_one_line_failure(result, 2)


# -- config check: no stack needed -------------------------------------------------


def test_config_check_passes_a_good_accounts_file(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "TICKER_ACCOUNTS_FILE": str(EXAMPLE_ACCOUNTS_FILE)}

    result = ticker(env, "config", "check")

    assert result.returncode == 0, result.stderr
    assert "ok, 2 accounts (sim-a, sim-b)" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [("TICKER_WEB_PORT", "99999", "TICKER_WEB_PORT: Input should be less than or equal to 65535"),
     ("TICKER_LOG_LEVEL", "LOUD", "TICKER_LOG_LEVEL: Input should be 'DEBUG'"),
     ("TICKER_WORKER_LEASE_S", "1", "TICKER_WORKER_LEASE_S (1.0) must be longer than"),
     ("TICKER_BACKFILL_INTERVAL", "fortnight", "TICKER_BACKFILL_INTERVAL: must be one of"),
     ("TICKER_FLOWER_BASIC_AUTH", "nocolon", "TICKER_FLOWER_BASIC_AUTH: must be user:password"),
     ("TICKER_BROKER_TRANSPORT_OPTIONS", "notjson", "broker_transport_options"),
     ("REDIS_URL", "http://:hunter2@127.0.0.1", "REDIS_URL: the scheme 'http' is not"),
     ("CELERY_BROKER_URL", "bogus://x", "CELERY_BROKER_URL: the scheme 'bogus' is not")],
)
@pytest.mark.parametrize("command", ["run", "worker", "accounts"])
def test_a_bad_setting_is_one_line_naming_the_variable(command, variable, value, says):
    args = [command, "--account", "sim-a"] if command == "worker" else [command]

    result = ticker({"PATH": "/usr/bin:/bin", variable: value}, *args)

    line = assert_one_line_failure(result, 2)
    assert "invalid settings" in line and says in line
    assert "hunter2" not in line


def test_a_worker_without_any_access_token_refuses_to_start_in_one_line(tmp_path):
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text("accounts:\n  - id: sim-a\n    api_key: simkey_a\n"
                        "    access_token_env: TICKER_TEST_UNSET_TOKEN\n")
    env = {"PATH": "/usr/bin:/bin", "TICKER_ACCOUNTS_FILE": str(accounts),
           # No token stored under this prefix either.
           "TICKER_KEY_PREFIX": f"test-none-stored-{tmp_path.name}:"}

    unset = ticker(env, "worker", "--account", "sim-a")
    unknown = ticker(env, "worker", "--account", "sim-z")

    assert "'TICKER_TEST_UNSET_TOKEN' holds no access token" in assert_one_line_failure(unset, 2)
    assert "`ticker token set sim-a`" in unset.stderr
    assert "no account 'sim-z'" in assert_one_line_failure(unknown, 2)


def test_config_check_answers_in_json_for_scripts(tmp_path):
    broken = tmp_path / "accounts.yaml"
    broken.write_text("accounts:\n  - id: sim-a\n    api_key: simkey_a\n")
    env = {"PATH": "/usr/bin:/bin", "TICKER_ACCOUNTS_FILE": str(EXAMPLE_ACCOUNTS_FILE)}

    good = ticker(env, "config", "check", "--json")
    bad = ticker(env, "config", "check", "--json", "--file", str(broken))

    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout) == {
        "file": str(EXAMPLE_ACCOUNTS_FILE), "ok": True, "accounts": ["sim-a", "sim-b"],
        "errors": [], "warnings": []}
    assert bad.returncode == 2 and bad.stderr == ""
    report = json.loads(bad.stdout)
    assert report["ok"] is False and report["accounts"] == []
    assert report["errors"] == [
        f"{broken}:2: accounts.0: give exactly one of access_token or access_token_env"]


def test_config_check_names_the_bad_line_and_field(tmp_path):
    broken = tmp_path / "accounts.yaml"
    broken.write_text(
        "accounts:\n"
        "  - id: sim-a\n"
        "    api_key: simkey_a\n"
        "    access_token: simtoken_a\n"
        "  - id: sim-b\n"
        "    api_key: simkey_b\n"
        "    access_token: simtoken_b\n"
        "    max_connections: 7\n"
    )

    result = ticker({"PATH": "/usr/bin:/bin"}, "config", "check", "--file", str(broken))

    line = assert_one_line_failure(result, 2)
    assert f"{broken}:8: accounts.1.max_connections:" in line


def test_config_check_refuses_a_token_no_one_could_log_in_with(tmp_path):
    broken = tmp_path / "accounts.yaml"
    broken.write_text("accounts:\n  - id: sim-a\n    api_key: simkey_a\n"
                      "    access_token: 'two words'\n")

    result = ticker({"PATH": "/usr/bin:/bin"}, "config", "check", "--file", str(broken))

    line = assert_one_line_failure(result, 2)
    assert f"{broken}:4: accounts.0.access_token: an access token must be one line" in line
    assert "two words" not in line


def test_config_check_names_the_line_of_broken_yaml(tmp_path):
    broken = tmp_path / "accounts.yaml"
    broken.write_text("accounts:\n  - id: sim-a\n   api_key: [\n")

    result = ticker(
        {"PATH": "/usr/bin:/bin", "TICKER_ACCOUNTS_FILE": str(broken)},
        "config",
        "check",
    )

    assert f"{broken}:3: not valid YAML" in assert_one_line_failure(result, 2)


def test_config_check_names_a_file_that_is_not_utf8(tmp_path):
    broken = tmp_path / "accounts.yaml"
    broken.write_bytes(b"accounts:\n  - id: sim-\xff\xfe\n")

    result = ticker({"PATH": "/usr/bin:/bin"}, "config", "check", "--file", str(broken))

    assert f"{broken}:2: not UTF-8 text" in assert_one_line_failure(result, 2)


def test_ls_of_an_unknown_account_is_a_usage_error(stack):
    result = ticker(stack.env, "ls", "--account", "nobody")

    assert "account" in assert_one_line_failure(result, 2)


def test_ticks_piped_into_a_reader_that_stops_ends_quietly(stack, streaming):
    token, _ = streaming
    # `head` leaves after the first line; the next tick's write finds no reader.
    pipeline = subprocess.run(
        f"set -o pipefail; {TICKER} ticks {token} | head -n 1",
        shell=True, executable="/bin/bash", env=stack.env, capture_output=True,
        text=True, timeout=CLI_TIMEOUT_S,
    )

    assert pipeline.returncode == 0, pipeline.stderr
    assert pipeline.stdout.split()[0] == str(token)
    assert pipeline.stderr == ""


# -- token rotation: a stack of its own ---------------------------------------------


@pytest.fixture(scope="module")
def rotation_stack(run_id: str, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("rotation-stack")
    accounts = workdir / "accounts.yaml"
    shutil.copy(EXAMPLE_ACCOUNTS_FILE, accounts)
    with running_stack(
        f"{run_id}rot",
        workdir,
        TICKER_ACCOUNTS_FILE=str(accounts),
        TICKER_SIM_TICK_INTERVAL_S="0.5",
        TICKER_WORKER_RECONCILE_S="3",
    ) as stack:
        yield stack


def connection_ids(stack: Stack, api_key: str) -> set[int]:
    return {c["id"] for c in live_connections(stack, api_key)}


def refusals(stack: Stack) -> int:
    return int(sim(stack, "GET", "stats").json()["refused_forbidden"])


def test_token_set_keeps_a_healthy_socket_and_is_used_on_its_next_reconnect(
    rotation_stack,
):
    worker = worker_process(rotation_stack, "sim-b").pid
    wait_until(
        lambda: worker_state(rotation_stack, "sim-b") == "ok",
        20,
        "sim-b healthy",
        rotation_stack,
    )
    before = connection_ids(rotation_stack, "simkey_b")
    # A fresh Kite login: the new token is valid at once, the old one is retired
    # for new connections, and live sockets stay up.
    sim(
        rotation_stack,
        "POST",
        "accounts/simkey_b/token",
        json={"access_token": "simtoken_b2"},
    )

    result = ticker(rotation_stack.env, "token", "set", "sim-b", stdin="simtoken_b2\n")
    time.sleep(5)  # two heartbeats: a worker that redials everything shows it by now
    kept = connection_ids(rotation_stack, "simkey_b")
    refused_before = refusals(rotation_stack)
    sim(rotation_stack, "POST", "accounts/simkey_b/drop", json={"code": 1006})
    wait_until(
        lambda: (
            connection_ids(rotation_stack, "simkey_b") - before
            and worker_state(rotation_stack, "sim-b") == "ok"
        ),
        20,
        "sim-b reconnected with the new token",
        rotation_stack,
    )

    assert result.returncode == 0, result.stderr
    assert kept == before, "a healthy socket must not be dropped for a new token"
    # The client redials its old URL once; Kite refuses that, and no more.
    assert refusals(rotation_stack) - refused_before <= 1
    assert worker_process(rotation_stack, "sim-b").pid == worker


def test_token_set_brings_a_refused_account_back_without_a_restart(rotation_stack):
    worker = worker_process(rotation_stack, "sim-b").pid
    sim(rotation_stack, "POST", "accounts/simkey_b/revoke")
    wait_until(
        lambda: worker_state(rotation_stack, "sim-b") == "auth_failed",
        15,
        "sim-b reported auth_failed",
        rotation_stack,
    )
    sim(
        rotation_stack,
        "POST",
        "accounts/simkey_b/token",
        json={"access_token": "simtoken_b3"},
    )

    result = ticker(
        {**rotation_stack.env, "NEW_KITE_TOKEN": "simtoken_b3"},
        "token",
        "set",
        "sim-b",
        "--token-env",
        "NEW_KITE_TOKEN",
        "--wait",
        "20",
    )
    accounts = json.loads(ticker(rotation_stack.env, "accounts", "--json").stdout)

    assert result.returncode == 0, result.stderr
    assert {a["account_id"]: a["socket_state"] for a in accounts["accounts"]}[
        "sim-b"
    ] == "ok"
    assert worker_process(rotation_stack, "sim-b").pid == worker
    # Tokens are secrets: no process of the stack printed one.
    assert not [
        line
        for line in rotation_stack.process.lines
        if "simtoken_b3" in line or "simtoken_b2" in line
    ]


def test_token_set_for_an_unknown_account_is_a_usage_error(rotation_stack):
    result = ticker(rotation_stack.env, "token", "set", "sim-z", stdin="whatever")

    assert "no account 'sim-z'" in assert_one_line_failure(result, 2)


def test_token_set_refuses_an_empty_token(rotation_stack):
    result = ticker(rotation_stack.env, "token", "set", "sim-b", stdin="\n")

    assert_one_line_failure(result, 2)


def test_token_set_asks_kite_first_and_stores_nothing_it_refuses(rotation_stack):
    env = rotation_stack.env
    client = redis.Redis.from_url(env["REDIS_URL"])
    prefix = env["TICKER_KEY_PREFIX"]
    before = access_tokens.read_override(client, prefix, "sim-b")

    refused = ticker(env, "token", "set", "sim-b", stdin="not-a-kite-token\n")
    stored_after_refusal = access_tokens.read_override(client, prefix, "sim-b")
    unchecked = ticker(env, "token", "set", "sim-b", "--no-check",
                       stdin="not-a-kite-token\n")
    stored_unchecked = access_tokens.read_override(client, prefix, "sim-b")
    if before is None:
        access_tokens.clear_override(client, prefix, "sim-b")
    else:
        access_tokens.store_override(client, prefix, "sim-b", before)

    assert "Kite refuses this token for sim-b" in assert_one_line_failure(refused, 1)
    assert "not-a-kite-token" not in refused.stderr + refused.stdout
    assert stored_after_refusal == before
    assert unchecked.returncode == 0, unchecked.stderr
    assert stored_unchecked == "not-a-kite-token"
