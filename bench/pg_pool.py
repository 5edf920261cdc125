"""The PostgreSQL backend's connection reuse against psycopg_pool's ConnectionPool: open/close latency and failure time.

Every store of :mod:`storage.postgres` holds one connection for its life (a dashboard opens one
per refresh: bars, feed events, alerts), so what matters is the cost of opening and closing a
store, and how soon a store opened while the server is down says so. Four ways, each ``--n``
open/close cycles on one throwaway cluster (testkit/postgres.py):

* ``fresh``: a new connection per store (TLS-less loopback, SCRAM), no reuse at all;
* ``idle-reuse``: :class:`~storage.postgres.ticks.PostgresTickStore` as shipped (its idle list);
* ``pool``: ``psycopg_pool.ConnectionPool(min_size=0, max_size=4)`` per key, ``getconn``/``putconn``;
* ``pool+check``: the same with ``check=ConnectionPool.check_connection`` (the probe the idle
  list runs, so a connection dropped by a server restart is never handed out).

Then the server is stopped and each way opens once more: the time until it raises, and what.

Usage: ``python bench/pg_pool.py [--n 500]`` (needs PostgreSQL binaries, like the tests).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from storage.postgres.db import CONNECT_TIMEOUT_S, connect
from storage.postgres.ticks import PostgresTickStore
from testkit.postgres import PgCluster

SCHEMA = "bench_pool"


def timed(cycle: Callable[[], None], n: int) -> tuple[float, float]:
    """Median and 95th percentile of ``n`` calls, in ms."""
    cycle()  # warm: first connection, migrations
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        cycle()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def make_pool(url: str, *, check: bool) -> ConnectionPool:
    def configure(conn: psycopg.Connection) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(SCHEMA)))

    return ConnectionPool(url, min_size=0, max_size=4,
                          kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S}, configure=configure,
                          check=ConnectionPool.check_connection if check else None,
                          timeout=CONNECT_TIMEOUT_S, open=True, num_workers=1)


def pooled_cycle(pool: ConnectionPool) -> Callable[[], None]:
    def cycle() -> None:
        conn = pool.getconn()
        conn.execute("SELECT 1")  # what a store does first
        pool.putconn(conn)
    return cycle


def failure(name: str, attempt: Callable[[], None]) -> None:
    start = time.perf_counter()
    try:
        attempt()
        outcome = "no error (!)"
    except Exception as exc:  # whatever comes out is the finding
        outcome = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
    print(f"  {name:<11} {(time.perf_counter() - start) * 1000:8.0f} ms  {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="open/close cycles per way (default 500)")
    args = parser.parse_args()
    cluster = PgCluster.find_and_start()
    try:
        url = cluster.create_database("bench")
        PostgresTickStore(url, SCHEMA).close()  # schema and migrations in place for every way

        def fresh() -> None:
            conn = connect(url, SCHEMA, application="quant bench")
            conn.execute("SELECT 1")
            conn.close()

        def idle_reuse() -> None:
            PostgresTickStore(url, SCHEMA).close()

        pool, checked = make_pool(url, check=False), make_pool(url, check=True)
        print(f"open + first query + close, {args.n} cycles (median / p95 ms):")
        for name, cycle in (("fresh", fresh), ("idle-reuse", idle_reuse), ("pool", pooled_cycle(pool)),
                            ("pool+check", pooled_cycle(checked))):
            median, p95 = timed(cycle, args.n)
            print(f"  {name:<11} {median:7.3f} / {p95:7.3f}")
        print("server stopped; one more open each (time until it raises, what):")
        cluster.stop(remove=False)
        failure("fresh", fresh)
        failure("idle-reuse", idle_reuse)
        failure("pool+check", pooled_cycle(checked))
        pool.close(timeout=1)
        checked.close(timeout=1)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
