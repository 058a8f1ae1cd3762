"""Which api_key and access_token pairs the simulator accepts, with their limits.

They come from the same accounts file the service uses, so an account the service
can log in with is exactly an account the simulator lets in.

Kite access tokens die daily, so tokens here can be revoked and replaced while
the simulator runs (see `switches`). The ticker upgrade and the REST middleware
both ask `Credentials.check`, so one revocation refuses a token on both paths.
A token that was revoked or replaced is never accepted again.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ticker.accounts import Account, load_accounts
from ticker.errors import ConfigInvalid, TickerError

logger = logging.getLogger(__name__)

# How much of a token the simulator ever shows: enough to tell two apart.
MASK_VISIBLE_CHARS = 3
MASK_SUFFIX = "…"


class TokenRetired(TickerError):
    """An access token that was revoked or replaced, offered as a new one."""


@dataclass(frozen=True, slots=True)
class Credential:
    """One account as the simulator sees it."""

    account_id: str
    api_key: str
    access_token: str
    max_instruments_per_connection: int
    max_connections: int


def mask_token(token: str) -> str:
    """A token cut to its first few characters, safe to log or return."""
    # A short token would be shown whole, so show none of it.
    if len(token) <= 2 * MASK_VISIBLE_CHARS:
        return MASK_SUFFIX
    return token[:MASK_VISIBLE_CHARS] + MASK_SUFFIX


class Credentials:
    """Checks api_key/access_token pairs against the configured accounts."""

    def __init__(
        self, accounts: Iterable[Account], environ: Mapping[str, str] | None = None
    ) -> None:
        self._by_api_key: dict[str, Credential] = {}
        # api_keys whose current token is refused until a new one is installed.
        self._revoked: set[str] = set()
        self._retired: dict[str, set[str]] = {}
        for account in accounts:
            try:
                token = account.resolve_access_token(environ)
            except ConfigInvalid as exc:
                # The other accounts still work; this one is refused like a bad token.
                logger.warning("account skipped account=%s reason=%s", account.id, exc)
                continue
            if account.api_key in self._by_api_key:
                logger.warning(
                    "account skipped account=%s reason=api_key %r already used",
                    account.id,
                    account.api_key,
                )
                continue
            self._by_api_key[account.api_key] = Credential(
                account_id=account.id,
                api_key=account.api_key,
                access_token=token,
                max_instruments_per_connection=account.max_instruments_per_connection,
                max_connections=account.max_connections,
            )
            self._retired[account.api_key] = set()

    @classmethod
    def from_file(cls, path: Path) -> Credentials:
        return cls(load_accounts(path))

    def __len__(self) -> int:
        return len(self._by_api_key)

    def __iter__(self) -> Iterator[Credential]:
        return iter(list(self._by_api_key.values()))

    def get(self, api_key: str) -> Credential | None:
        return self._by_api_key.get(api_key)

    def check(self, api_key: str | None, access_token: str | None) -> Credential | None:
        """The account these credentials open, or None if Kite would refuse them."""
        if not api_key or not access_token:
            return None
        credential = self._by_api_key.get(api_key)
        if credential is None or api_key in self._revoked:
            return None
        if not hmac.compare_digest(credential.access_token, access_token):
            return None
        return credential

    def is_revoked(self, api_key: str) -> bool:
        return api_key in self._revoked

    def retired_count(self, api_key: str) -> int:
        return len(self._retired.get(api_key, ()))

    def revoke(self, api_key: str) -> Credential | None:
        """Refuse the api_key's current token from now on; None for an unknown key."""
        credential = self._by_api_key.get(api_key)
        if credential is None:
            return None
        self._revoked.add(api_key)
        self._retired[api_key].add(credential.access_token)
        logger.info(
            "access token revoked api_key=%s token=%s",
            api_key,
            mask_token(credential.access_token),
        )
        return credential

    def install_token(self, api_key: str, access_token: str) -> Credential | None:
        """Make `access_token` the api_key's only valid token; None for an unknown key.

        The token it replaces is retired, as a fresh Kite login ends the old one.
        Raises `TokenRetired` for a token this api_key already had.
        """
        credential = self._by_api_key.get(api_key)
        if credential is None:
            return None
        if access_token in self._retired[api_key]:
            raise TokenRetired(
                f"access token {mask_token(access_token)!r} of api_key {api_key!r} "
                "was revoked or replaced before; install a token never used"
            )
        if access_token != credential.access_token:
            self._retired[api_key].add(credential.access_token)
            credential = dataclasses.replace(credential, access_token=access_token)
            self._by_api_key[api_key] = credential
        self._revoked.discard(api_key)
        logger.info(
            "access token installed api_key=%s token=%s",
            api_key,
            mask_token(access_token),
        )
        return credential
