"""Property-based fuzzing of every documented endpoint, from the API's own OpenAPI document.

Schemathesis reads /openapi.json from the running stack and generates requests for
each operation, valid and invalid alike; hypothesis drives them. Every answer must
be a documented status, carry a body matching the schema documented for it, and
none may be a 5xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

pytestmark = pytest.mark.timeout(600)

EXAMPLES_PER_OPERATION = 60
# JSON Schema counts 1.0 as an integer; the API refuses floats for tokens by design
# (a float token is a client bug), so "schema-valid" data may rightly get a 422.
# The stack runs on loopback with no API key configured, where writes are open by
# design; that a configured key is enforced is tests/integration/test_api_key.py's.
EXCLUDED = [positive_data_acceptance, ignored_auth]


def test_no_request_gets_a_server_error_or_an_undocumented_answer(stack):
    schema = schemathesis.openapi.from_url(f"{stack.api}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            case.call_and_validate(excluded_checks=EXCLUDED)

        fuzz()
