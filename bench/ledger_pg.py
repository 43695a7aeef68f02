"""How fast the PostgreSQL ledger's writer puts records into PostgreSQL (rows/s), and what `add`
costs on the request path. A schema of its own (created, migrated, dropped at the end).

    python bench/ledger_pg.py [--url postgresql://postgres@127.0.0.1:5432/test] [-n 100000]
                              [--batch 1000] [--rounds 3]

Three figures: `add` per record (the request path: a deque append); the writer draining a
queue of n records (`flush`: one INSERT ... SELECT * FROM unnest(...) ON CONFLICT DO NOTHING per
batch), into a table that already holds the earlier rounds; and the journal
replay (records written while PostgreSQL was down, read back from the local file).
Target: >= 5,000 rows/s written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from gateway.config.schema import LedgerConfig
from gateway.database.migrate import upgrade
from gateway.database.pool import Database
from gateway.ledger.journal import LedgerJournal
from gateway.ledger.store import LedgerRecord, iso
from gateway.ledger.store_pg import PostgresLedger
from gateway.ledger.writer import record_id

TARGET_ROWS_S = 5000


def record(i: int) -> LedgerRecord:
    return LedgerRecord(iso(datetime.now(UTC)), uuid.uuid4().hex, "k_123", "bench", f"team-{i % 7}",
                        f"model-{i % 5}", "openai", ("", "standard")[i % 2], 1000, 200, 0, 300, 50, 1_000_000_000,
                        50_000_000, 0, 3_000_000_000, 500_000_000, 4_550_000_000 + i, "miss", "", "200", 123.456,
                        i % 1000, 0)


async def bench(url: str, n: int, batch: int, rounds: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    database = Database(url, schema)
    workdir = tempfile.mkdtemp(prefix="ledger-pg-bench-")
    try:
        await upgrade(database)
        ledger = PostgresLedger(database, LedgerConfig(batch_records=batch, max_queued=n + 1),
                                LedgerJournal(os.path.join(workdir, "ledger.jsonl")))
        records = [record(i) for i in range(n)]
        await ledger.flush()  # (opens the pool)
        rates, add_us = [], []
        for _ in range(rounds):
            t = time.perf_counter_ns()
            for r in records:
                ledger.add(r)
            add_us.append((time.perf_counter_ns() - t) / n / 1000)
            t = time.perf_counter_ns()
            await ledger.flush()
            rates.append(n / ((time.perf_counter_ns() - t) / 1e9))
        ledger.journal.append([(record_id(), r) for r in records])
        t = time.perf_counter_ns()
        replayed = await ledger.replay()
        replay_rate = replayed / ((time.perf_counter_ns() - t) / 1e9)
        pool = await database.pool()
        rows = await pool.fetchval("SELECT count(*) FROM ledger")
        assert rows == n * (rounds + 1), rows
        print(f"add() on the request path: {statistics.median(add_us):.2f} us/record")
        print(f"writer (flush), batch {batch}, n={n}: " + ", ".join(f"{r:,.0f}" for r in rates)
              + f" rows/s (median {statistics.median(rates):,.0f}; target >= {TARGET_ROWS_S:,})")
        print(f"journal replay, n={n}: {replay_rate:,.0f} rows/s; {rows:,} rows in the table")
    finally:
        await database.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(bench(args.url, args.n, args.batch, args.rounds))


if __name__ == "__main__":
    main()
