"""The OpenAPI document the API serves, built from the models that validate requests."""

from __future__ import annotations

from tests.integration.test_web_outages import client_for, simulator  # noqa: F401
from web.schemas import MAX_INSTRUMENT_TOKEN


def test_the_document_describes_every_route_with_its_inputs_and_error_shape(
        settings, simulator):  # noqa: F811
    document = client_for(settings, simulator).get("/openapi.json").get_json()

    operations = {(method.upper(), path) for path, ops in document["paths"].items()
                  for method in ops}
    assert operations == {
        ("POST", "/subscriptions"), ("GET", "/subscriptions"),
        ("POST", "/subscriptions/batch"),
        ("GET", "/subscriptions/{raw_token}"), ("DELETE", "/subscriptions/{raw_token}"),
        ("PATCH", "/subscriptions/{raw_token}"),
        ("GET", "/subscriptions/{raw_token}/candles"), ("GET", "/events"),
        ("GET", "/accounts"), ("GET", "/health"),
        ("GET", "/status.json"),
    }
    post = document["paths"]["/subscriptions"]["post"]
    # The request body is the very model the route validates with.
    body_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    # A token or a symbol names the instrument, so the token may be null.
    [token_schema] = [choice for choice in schema["properties"]["instrument_token"]["anyOf"]
                      if choice["type"] == "integer"]
    assert token_schema["maximum"] == MAX_INSTRUMENT_TOKEN
    assert {"tradingsymbol", "exchange", "client_id"} <= schema["properties"].keys()
    assert schema["additionalProperties"] is False
    for status in ("400", "401", "404", "413", "422", "503"):
        ref = post["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/Error")
    assert post["security"] == [{"apiKey": []}]
    assert "security" not in document["paths"]["/health"]["get"]
