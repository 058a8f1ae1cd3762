"""Schema migrations, applied with yoyo from the ordered SQL files in ticker/migrations.

Every process that needs the schema calls `apply_migrations` at start; yoyo takes a
lock, so processes starting together apply each migration once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from yoyo import get_backend, read_migrations

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def apply_migrations(database_url: str) -> int:
    """Create the database when missing, then apply pending migrations; return how many."""
    ensure_database(database_url)
    backend = get_backend(_yoyo_url(database_url))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    log.info("database migrated applied=%d database=%s", len(pending), _db_name(database_url))
    return len(pending)


def ensure_database(database_url: str) -> None:
    """Create the URL's database through the server's maintenance database if absent."""
    name = _db_name(database_url)
    params = conninfo_to_dict(database_url)
    params["dbname"] = "postgres"
    with psycopg.connect(make_conninfo(**params), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if exists.fetchone() is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                log.info("database created database=%s", name)
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it first


def _db_name(database_url: str) -> str:
    return str(conninfo_to_dict(database_url).get("dbname") or "postgres")


def _yoyo_url(database_url: str) -> str:
    scheme, sep, rest = database_url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {scheme!r}")
    return f"postgresql+psycopg://{rest}"
