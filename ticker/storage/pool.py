"""Connection pools for the service's processes."""

from __future__ import annotations

from psycopg_pool import ConnectionPool


def make_pool(database_url: str, name: str, max_size: int = 8) -> ConnectionPool:
    """A pool of autocommit connections.

    Autocommit makes each `conn.transaction()` a real transaction that commits on
    exit, so a request's write is durable before its task is queued.
    """
    return ConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True},
        # A connection broken by a database restart is replaced on checkout
        # instead of failing the request that drew it.
        check=ConnectionPool.check_connection,
        timeout=5,
        name=name,
        open=True,
    )
