"""The connection pool to PostgreSQL (asyncpg), opened on first use and closed at shutdown.
Everything that talks to the database takes this object, never a module-level pool."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.errors import ServiceUnavailable

__all__ = ["Database"]


class Database:
    """`url`: a PostgreSQL URL; `schema`: where the gateway's tables live (its search_path), so
    that one database can hold several gateways (and each test its own schema)."""

    def __init__(self, url: str, schema: str = "public", min_size: int = 1, max_size: int = 10,
                 timeout_s: float = 5.0) -> None:
        self.url = url
        self.schema = schema
        self._min = min_size
        self._max = max_size
        self._timeout = timeout_s
        self._pool: Any = None
        self._opening: asyncio.Lock | None = None

    async def pool(self) -> Any:
        """The asyncpg pool (opened now if it is not yet); ServiceUnavailable if PostgreSQL cannot
        be reached."""
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                import asyncpg

                try:
                    self._pool = await asyncpg.create_pool(min_size=self._min, max_size=self._max, reset=_keep_session,
                                                           **self._connection())
                except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                    raise _unavailable(exc) from None
        return self._pool

    def _connection(self) -> dict[str, Any]:
        """How every connection is made, pooled or not."""
        return {"dsn": self.url, "timeout": self._timeout, "command_timeout": self._timeout,
                "server_settings": {"search_path": self.schema}}

    async def connect(self) -> Any:
        """A connection of its own, outside the pool, with the same settings: for work that leaves
        session state behind (the migrations' advisory lock). The caller closes it."""
        import asyncpg

        try:
            return await asyncpg.connect(**self._connection())
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise _unavailable(exc) from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


async def _keep_session(connection: Any) -> None:
    """What a pooled connection needs when it goes back to the pool: nothing more than asyncpg
    does anyway (it rolls back a transaction left open). Its default reset query (RESET ALL,
    UNLISTEN *, CLOSE ALL, pg_advisory_unlock_all()) was one more round trip per use, a third of
    the client CPU of a settled-spend batch: pooled connections carry no session state here (no
    SET, LISTEN, cursor or session lock; `migrate` takes its lock on a connection of its own)."""


def _unavailable(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(f"the database (PostgreSQL) is unavailable: {exc}")
