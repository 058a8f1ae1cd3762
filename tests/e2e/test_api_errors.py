"""Bad input gets a clear JSON 4xx naming the field, and changes nothing."""

from __future__ import annotations

import psycopg
import pytest
import requests

NIFTY_CE = 13660418


def row_count(stack) -> int:
    with psycopg.connect(stack.database_url) as conn:
        return conn.execute("SELECT count(*) FROM subscriptions").fetchone()[0]


@pytest.fixture
def unchanged(stack):
    """Asserts after the test that no subscription row was written."""
    before = row_count(stack)
    yield
    assert row_count(stack) == before


def post(stack, body=None, raw: bytes | None = None, content_type="application/json"):
    return requests.post(
        f"{stack.api}/subscriptions",
        json=body if raw is None else None,
        data=raw,
        headers={"Content-Type": content_type} if raw is not None else None,
        timeout=10,
    )


def assert_error(answer: requests.Response, status: int, code: str, field=None) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == answer.headers["X-Request-ID"]
    if field is not None:
        assert error["field"] == field
        assert field in error["message"]
    return error


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"[1, 2]", b'"13660418"', b"null"],
    ids=["broken", "empty", "array", "string", "null"],
)
def test_a_body_that_is_not_a_json_object_is_400(stack, unchanged, raw):
    assert_error(post(stack, raw=raw), 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"requested_mode": "FULL"}, "instrument_token"),
        ({"instrument_token": "13660418"}, "instrument_token"),
        ({"instrument_token": 13660418.0}, "instrument_token"),
        ({"instrument_token": True}, "instrument_token"),
        ({"instrument_token": None}, "instrument_token"),
        ({"instrument_token": -5}, "instrument_token"),
        ({"instrument_token": 0}, "instrument_token"),
        ({"instrument_token": 2**32}, "instrument_token"),
        ({"instrument_token": "1; DROP TABLE subscriptions"}, "instrument_token"),
        ({"instrument_token": NIFTY_CE, "requested_mode": "SNAPQUOTE"}, "requested_mode"),
        ({"instrument_token": NIFTY_CE, "requested_mode": 3}, "requested_mode"),
        ({"instrument_token": NIFTY_CE, "requested_mode": "ｆｕｌｌ"}, "requested_mode"),
        ({"instrument_token": NIFTY_CE, "mode": "FULL"}, "mode"),
    ],
)
def test_a_missing_or_wrong_field_is_422_naming_it(stack, unchanged, body, field):
    assert_error(post(stack, body), 422, "invalid_field", field)


def test_an_unknown_instrument_is_404(stack, unchanged):
    error = assert_error(post(stack, {"instrument_token": 4294967295}), 404,
                         "unknown_instrument", "instrument_token")

    assert "4294967295" in error["message"]


def test_a_body_over_one_mebibyte_is_413(stack, unchanged):
    huge = b'{"instrument_token": 13660418, "pad": "' + b"x" * (1024 * 1024) + b'"}'

    error = assert_error(post(stack, raw=huge), 413, "request_entity_too_large")

    assert error["message"] == "the body must be under 1048576 bytes"


@pytest.mark.parametrize(
    ("raw", "field"),
    [(b'{"instrument_token": 13660418, "instrument_token": 256265}', "instrument_token"),
     (b'{"instruments": [{"instrument_token": 1, "instrument_token": 2}]}', "instrument_token")],
    ids=["top level", "nested"],
)
def test_a_key_given_twice_is_refused_not_last_one_wins(stack, unchanged, raw, field):
    error = assert_error(post(stack, raw=raw), 422, "invalid_field", field)

    assert "more than once" in error["message"]


@pytest.mark.parametrize("path", ["/subscriptions/abc", "/subscriptions/-1",
                                  "/subscriptions/99999999999"])
def test_a_malformed_token_in_the_path_is_422(stack, unchanged, path):
    for method in ("GET", "DELETE"):
        answer = requests.request(method, f"{stack.api}{path}", timeout=10)
        assert_error(answer, 422, "invalid_field", "instrument_token")


def test_deleting_what_was_never_subscribed_is_404(stack, unchanged):
    answer = requests.delete(f"{stack.api}/subscriptions/256265", timeout=10)

    assert_error(answer, 404, "subscription_not_found", "instrument_token")


def test_unknown_routes_and_methods_answer_json(stack, unchanged):
    assert_error(requests.get(f"{stack.api}/nowhere", timeout=10), 404, "not_found")
    assert_error(requests.put(f"{stack.api}/subscriptions", timeout=10), 405,
                 "method_not_allowed")
    for method in ("GET", "PATCH", "DELETE"):
        answer = requests.request(method, f"{stack.api}/subscriptions/batch", timeout=10)
        assert_error(answer, 405, "method_not_allowed")
        assert answer.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "gone"}, "status"), ({"account": "nobody"}, "account"),
     ({"colour": "red"}, "colour")],
)
def test_a_bad_list_filter_is_422_naming_it(stack, params, field):
    answer = requests.get(f"{stack.api}/subscriptions", params=params, timeout=10)

    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == field


def test_deeply_nested_json_is_400_not_a_crash(stack, unchanged):
    deep = b"[" * 5000 + b"]" * 5000

    error = assert_error(post(stack, raw=deep), 400, "invalid_json")

    assert "nested too deeply" in error["message"]


def test_a_number_too_long_to_read_is_400_in_the_apis_own_words(stack, unchanged):
    huge = b'{"instrument_token": ' + b"9" * 10_000 + b"}"

    error = assert_error(post(stack, raw=huge), 400, "invalid_json")

    assert "more digits than any field takes" in error["message"]
    assert "sys." not in error["message"]


def test_a_chunked_body_over_one_mebibyte_is_413(stack, unchanged):
    chunks = (b"x" * 65536 for _ in range(32))

    answer = requests.post(f"{stack.api}/subscriptions", data=chunks,
                           headers={"Content-Type": "application/json"}, timeout=10)

    error = assert_error(answer, 413, "request_entity_too_large")

    assert error["message"] == "the body must be under 1048576 bytes"


def test_a_patch_without_a_mode_names_the_modes_as_post_does(stack, unchanged):
    answer = requests.patch(f"{stack.api}/subscriptions/{NIFTY_CE}",
                            json={"requested_mode": None}, timeout=10)

    error = assert_error(answer, 422, "invalid_field", "requested_mode")

    assert "must be one of LTP, QUOTE or FULL" in error["message"]


def test_a_body_without_the_json_content_type_says_so(stack, unchanged):
    error = assert_error(post(stack, raw=b'{"instrument_token": 13660418}',
                              content_type="text/plain"), 400, "invalid_json")

    assert "Content-Type: application/json" in error["message"]


def test_a_wrong_method_names_the_allowed_ones(stack):
    answer = requests.put(f"{stack.api}/subscriptions", timeout=10)

    assert answer.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    assert "use GET" in answer.json()["error"]["message"]


def test_candles_from_after_to_is_422_naming_to(stack):
    answer = requests.get(f"{stack.api}/subscriptions/{NIFTY_CE}/candles",
                          params={"from": "2026-12-04", "to": "2026-12-03"}, timeout=10)

    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "to"


def test_a_hostile_request_id_is_replaced_not_echoed(stack):
    answer = requests.get(f"{stack.api}/health", headers={"X-Request-ID": "<script>x"},
                          timeout=10)
    kept = requests.get(f"{stack.api}/health", headers={"X-Request-ID": "abc-123"},
                        timeout=10)

    assert answer.headers["X-Request-ID"] != "<script>x"
    assert kept.headers["X-Request-ID"] == "abc-123"


def test_filters_take_any_case(stack):
    answer = requests.get(f"{stack.api}/subscriptions", params={"status": "ACTIVE"},
                          timeout=10)

    assert answer.status_code == 200


def test_a_delete_with_a_body_is_refused_and_removes_nobody(stack):
    url = f"{stack.api}/subscriptions/{NIFTY_CE}"
    for client_id in ("t1", "default"):
        assert post(stack, {"instrument_token": NIFTY_CE, "requested_mode": "LTP",
                            "client_id": client_id}).status_code in (200, 202)
    try:
        answer = requests.delete(url, json={"client_id": "t1"}, timeout=10)

        assert_error(answer, 422, "unexpected_body", "body")
        held = {r["client_id"] for r in requests.get(url, timeout=10).json()["requesters"]}
        assert held == {"t1", "default"}
    finally:
        for client_id in ("t1", "default"):
            requests.delete(url, params={"client_id": client_id}, timeout=10)


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "field", "hint"),
    [
        ("PATCH", f"/subscriptions/{NIFTY_CE}", {"client_id": "t1"},
         {"requested_mode": "FULL"}, "client_id", "JSON body"),
        ("POST", "/subscriptions", {"foo": "bar"},
         {"instrument_token": NIFTY_CE}, "foo", "no query parameters"),
        ("DELETE", f"/subscriptions/{NIFTY_CE}", [("client_id", "a"), ("client_id", "b")],
         None, "client_id", "more than once"),
    ],
    ids=["patch-query", "post-query", "delete-repeated"],
)
def test_a_query_parameter_nobody_reads_is_refused(stack, unchanged, method, path, params,
                                                    body, field, hint):
    answer = requests.request(method, f"{stack.api}{path}", params=params, json=body,
                              timeout=10)

    assert hint in assert_error(answer, 422, "invalid_field", field)["message"]


def test_a_requester_that_holds_nothing_of_a_live_token_is_named_as_the_fault(stack):
    url = f"{stack.api}/subscriptions/{NIFTY_CE}"
    assert post(stack, {"instrument_token": NIFTY_CE, "requested_mode": "LTP",
                        "client_id": "holder"}).status_code in (200, 202)
    try:
        patched = requests.patch(url, json={"requested_mode": "FULL", "client_id": "other"},
                                 timeout=10)
        deleted = requests.delete(url, params={"client_id": "other"}, timeout=10)

        assert_error(patched, 404, "subscription_not_found", "client_id")
        assert_error(deleted, 404, "subscription_not_found", "client_id")
    finally:
        requests.delete(url, params={"client_id": "holder"}, timeout=10)
