"""Which tokens the simulator accepts, and how revoking and replacing them works."""

from __future__ import annotations

import pytest

from ticker.accounts import Account
from ticker.simulator.credentials import Credentials, TokenRetired, mask_token


@pytest.fixture
def credentials() -> Credentials:
    return Credentials(
        [
            Account(id="alpha", api_key="key_alpha", access_token="tok_alpha"),
            Account(id="beta", api_key="key_beta", access_token="tok_beta"),
        ]
    )


def test_the_configured_pair_is_accepted_and_anything_else_refused(credentials):
    assert credentials.check("key_alpha", "tok_alpha").account_id == "alpha"
    assert credentials.check("key_alpha", "tok_beta") is None
    assert credentials.check("key_nobody", "tok_alpha") is None
    assert credentials.check("key_alpha", None) is None


def test_a_revoked_token_is_refused_and_other_accounts_are_not(credentials):
    revoked = credentials.revoke("key_alpha")

    assert revoked is not None and revoked.api_key == "key_alpha"
    assert credentials.check("key_alpha", "tok_alpha") is None
    assert credentials.is_revoked("key_alpha")
    assert credentials.check("key_beta", "tok_beta") is not None


def test_a_new_token_is_accepted_and_the_revoked_one_stays_refused(credentials):
    credentials.revoke("key_alpha")

    installed = credentials.install_token("key_alpha", "tok_alpha_2")

    assert installed is not None and installed.access_token == "tok_alpha_2"
    assert credentials.check("key_alpha", "tok_alpha_2") is installed
    assert credentials.check("key_alpha", "tok_alpha") is None
    assert not credentials.is_revoked("key_alpha")
    assert credentials.retired_count("key_alpha") == 1


def test_installing_over_a_valid_token_retires_it(credentials):
    credentials.install_token("key_beta", "tok_beta_2")

    assert credentials.check("key_beta", "tok_beta") is None
    assert credentials.check("key_beta", "tok_beta_2") is not None
    assert credentials.retired_count("key_beta") == 1


def test_a_retired_token_cannot_be_installed_again(credentials):
    credentials.revoke("key_alpha")

    with pytest.raises(TokenRetired, match="tok…"):
        credentials.install_token("key_alpha", "tok_alpha")
    assert credentials.check("key_alpha", "tok_alpha") is None


def test_unknown_api_keys_cannot_be_revoked_or_given_a_token(credentials):
    assert credentials.revoke("key_nobody") is None
    assert credentials.install_token("key_nobody", "tok") is None
    assert [c.api_key for c in credentials] == ["key_alpha", "key_beta"]


@pytest.mark.parametrize(
    ("token", "shown"),
    [("tok_alpha", "tok…"), ("abcdefg", "abc…"), ("abcdef", "…"), ("", "…")],
)
def test_a_masked_token_shows_at_most_its_first_three_characters(token, shown):
    assert mask_token(token) == shown
