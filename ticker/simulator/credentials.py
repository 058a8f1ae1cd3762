"""Which api_key and access_token pairs the simulator accepts, with their limits.

They come from the same accounts file the service uses, so an account the service
can log in with is exactly an account the simulator lets in.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ticker.accounts import Account, load_accounts
from ticker.errors import ConfigInvalid

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Credential:
    """One account as the simulator sees it."""

    account_id: str
    api_key: str
    access_token: str
    max_instruments_per_connection: int
    max_connections: int


class Credentials:
    """Checks api_key/access_token pairs against the configured accounts."""

    def __init__(
        self, accounts: Iterable[Account], environ: Mapping[str, str] | None = None
    ) -> None:
        self._by_api_key: dict[str, Credential] = {}
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

    @classmethod
    def from_file(cls, path: Path) -> Credentials:
        return cls(load_accounts(path))

    def __len__(self) -> int:
        return len(self._by_api_key)

    def check(self, api_key: str | None, access_token: str | None) -> Credential | None:
        """The account these credentials open, or None if Kite would refuse them."""
        if not api_key or not access_token:
            return None
        credential = self._by_api_key.get(api_key)
        if credential is None:
            return None
        if not hmac.compare_digest(credential.access_token, access_token):
            return None
        return credential
