"""The service and the recorder on PostgreSQL: who may write a schema, who follows it, what a user sees on errors.

Recorders run as a user runs them (``python -m cli.record --db-url …``); the database is a fresh one
in the session's throwaway cluster (tests/conftest.py).
"""

from __future__ import annotations

import signal

import pytest

from config import Settings
from records import StorageState
from service import Service
from testkit.waiting import eventually
from tests.test_faults_postgres import count, recorder


def simulated(pg_url: str, **changes: object) -> Settings:
    return Settings.of(**{"source": "simulated", "db_url": pg_url, "speed": 20.0, **changes})


def test_a_dashboard_follows_a_recorder_writing_the_schema(pg_url):
    proc = recorder("--source", "simulated", "--speed", "20", "--db-url", pg_url, "--status-interval", "0.5")
    try:
        eventually(lambda: count(pg_url, "simulated") > 0, timeout=30, message="the recorder stored nothing")
        service = Service.start(simulated(pg_url), follow=True)
        try:
            assert service.following and service.writer is None and service.monitor is None
            status = service.status()
            assert status.storage_state is StorageState.FOLLOWING and f"pid {proc.pid} on " in status.storage_detail
            eventually(lambda: service.engine.last_trade("ETHUSDT") is not None, timeout=10)
            first = service.engine.last_trade("ETHUSDT").trade_id
            eventually(lambda: service.engine.last_trade("ETHUSDT").trade_id > first, timeout=10)
        finally:
            service.stop()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    final = [line for line in out.splitlines() if "final:" in line][-1]
    assert count(pg_url, "simulated") == int(final.split(" trades=")[1].split()[0])  # one market, all of it


def test_a_second_simulated_recorder_on_the_schema_is_refused_naming_the_first(pg_cluster, pg_url):
    first = recorder("--source", "simulated", "--speed", "5", "--db-url", pg_url, "--status-interval", "0.5")
    try:
        eventually(lambda: count(pg_url, "simulated") > 0, timeout=30, message="the first recorder stored nothing")
        second = recorder("--source", "simulated", "--seed", "9", "--duration", "3", "--db-url", pg_url)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 1, out
        assert out.startswith(f"error: cannot record: database 'postgresql://quant:***@127.0.0.1:{pg_cluster.port}/")
        assert f"schema simulated' is already being written by pid {first.pid} on " in out
        assert "SIMULATED market (seed 7)" in out and pg_cluster.password not in out
        # Another source has a schema of its own: a live recorder is not refused by the simulated one.
        first.send_signal(signal.SIGTERM)
        first_out, _ = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate(timeout=10)
    assert first.returncode == 0, first_out


def test_an_unreachable_database_exits_1_naming_it_without_the_password(pg_cluster, pg_url):
    closed = pg_url.replace(f":{pg_cluster.port}/", ":1/")
    proc = recorder("--source", "simulated", "--duration", "3", "--db-url", closed)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert out.startswith("error: cannot record: cannot use database 'postgresql://quant:***@127.0.0.1:1/")
    assert pg_cluster.password not in out and "Traceback" not in out


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://quant:hunter2@db:99999/desk",
     "error: db_url (--db-url): port 99999 in 'postgresql://quant:***@db:99999/desk'"),
    ("mysql://quant:hunter2@db/desk", "error: db_url (--db-url): scheme 'mysql' is not one of postgresql, postgres"),
])
def test_a_bad_db_url_exits_2_without_the_password(url, expected):
    proc = recorder("--source", "simulated", "--db-url", url)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert out.startswith(expected) and "hunter2" not in out


def _query_password_url(pg_cluster, pg_url: str, password: str) -> str:
    """``pg_url`` with its password moved from ``user:pw@`` into ``?password=`` (another form libpq takes)."""
    return pg_url.replace(f":{pg_cluster.password}@", "@") + f"?sslmode=disable&password={password}"


def test_a_query_password_never_appears_in_the_recorder_output(pg_cluster, pg_url):
    url = _query_password_url(pg_cluster, pg_url, pg_cluster.password)
    proc = recorder("--source", "simulated", "--speed", "20", "--duration", "2", "--db-url", url,
                    "--status-interval", "0.3", "--log-level", "DEBUG")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert count(pg_url, "simulated") > 0  # it did connect with the query password
    assert "recording " in out and f"into postgresql://quant@127.0.0.1:{pg_cluster.port}/" in out
    assert "password=***" in out and pg_cluster.password not in out


@pytest.mark.parametrize("wrong", ["port", "password"])
def test_a_query_password_never_appears_on_the_error_paths(pg_cluster, pg_url, wrong):
    bad = "Wrong-Secret-77"
    url = _query_password_url(pg_cluster, pg_url, bad if wrong == "password" else pg_cluster.password)
    if wrong == "port":
        url = url.replace(f":{pg_cluster.port}/", ":1/")
    proc = recorder("--source", "simulated", "--duration", "3", "--db-url", url)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert out.startswith("error: cannot record: ") and "password=***" in out
    assert bad not in out and pg_cluster.password not in out and "Traceback" not in out


def test_the_service_status_and_log_never_show_a_query_password(pg_cluster, pg_url, caplog):
    url = _query_password_url(pg_cluster, pg_url, pg_cluster.password)
    with caplog.at_level("DEBUG"):
        service = Service.start(simulated(url))
        try:
            eventually(lambda: service.status().stored > 0, timeout=30, message="the service stored nothing")
            status = service.status()
        finally:
            service.stop()
    shown = f"{caplog.text} {status} {service.site.location} {service.settings!r}"
    assert "password=***" in shown and pg_cluster.password not in shown
