"""Kite accounts and the socket limits each one brings.

Accounts come from a YAML file (see `config/accounts.example.yaml`). An access token is
given either inline or, better for real credentials, as the name of an environment
variable that holds it, so the file itself can be committed without secrets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ticker.errors import ConfigInvalid, UnknownAccount

# Kite's documented limits: 3,000 instruments on one WebSocket connection and
# 3 connections per api_key.
KITE_MAX_INSTRUMENTS_PER_CONNECTION = 3000
KITE_MAX_CONNECTIONS = 3
# What an access token can look like: one line of printable ASCII, no spaces.
ACCESS_TOKEN_PATTERN = re.compile(r"^[\x21-\x7e]{1,256}$")
ACCESS_TOKEN_RULE = "one line of printable characters without spaces (1 to 256)"


class Account(BaseModel):
    """One Kite api_key with its access token and socket limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    api_key: str = Field(min_length=1)
    access_token: str | None = Field(default=None, repr=False)
    access_token_env: str | None = None
    max_instruments_per_connection: int = Field(
        KITE_MAX_INSTRUMENTS_PER_CONNECTION,
        ge=1,
        le=KITE_MAX_INSTRUMENTS_PER_CONNECTION,
    )
    max_connections: int = Field(KITE_MAX_CONNECTIONS, ge=1, le=KITE_MAX_CONNECTIONS)

    @field_validator("access_token")
    @classmethod
    def _token_shape(cls, value: str | None) -> str | None:
        # The value is never repeated in the error: it is a secret, perhaps with a typo.
        if value is not None and not ACCESS_TOKEN_PATTERN.match(value):
            raise ValueError(f"an access token must be {ACCESS_TOKEN_RULE}")
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> Account:
        if (self.access_token is None) == (self.access_token_env is None):
            raise ValueError("give exactly one of access_token or access_token_env")
        return self

    @property
    def capacity(self) -> int:
        """Instruments this account can stream at once over all its connections."""
        return self.max_instruments_per_connection * self.max_connections

    def resolve_access_token(self, environ: Mapping[str, str] | None = None) -> str:
        """The access token, read from the environment when the file names a variable."""
        if self.access_token is not None:
            return self.access_token
        environ = os.environ if environ is None else environ
        assert self.access_token_env is not None
        token = environ.get(self.access_token_env)
        if not token:
            raise ConfigInvalid(
                f"account {self.id!r}: environment variable "
                f"{self.access_token_env!r} holds no access token; export it where the "
                "service runs"
            )
        return token


class AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accounts: list[Account] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> AccountsFile:
        ids = [a.id for a in self.accounts]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"account ids must be unique; repeated: {duplicated}")
        return self


class Accounts:
    """The configured accounts, in file order, looked up by id."""

    def __init__(self, accounts: list[Account]) -> None:
        self._by_id = {a.id: a for a in accounts}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    def get(self, account_id: str) -> Account:
        try:
            return self._by_id[account_id]
        except KeyError:
            raise UnknownAccount(
                f"no account {account_id!r} in the accounts file; "
                f"known: {sorted(self._by_id)}"
            ) from None


def load_accounts(path: Path) -> Accounts:
    """Read and validate the accounts file, naming the file and field on error."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigInvalid(f"cannot read accounts file {str(path)!r}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigInvalid(f"accounts file {str(path)!r} is not YAML: {exc}") from exc
    try:
        parsed = AccountsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigInvalid(f"accounts file {str(path)!r} is invalid: {problems}") from exc
    return Accounts(parsed.accounts)
