"""The storage registry: backends chosen by URL scheme in one place, each a package behind the same interface.

The behaviour of each backend is pinned by the contract tests (test_storage_contract.py); these
tests pin the seams of the layout: how a backend is found, that every registered one offers what
the factory calls, and that no backend maps rows or tells backends apart on its own.
"""

from __future__ import annotations

import ast
import inspect
import sys
import types
from pathlib import Path

import pytest

import storage
from config import StorageSettings
from records import BarArrays
from storage.registry import BACKENDS, Backend, Site, backend, backend_of
from storage.sqlite.ticks import SqliteTickStore

STORAGE = Path(storage.__file__).resolve().parent
# Records a row becomes; only storage/rows.py (and the backend-neutral modules) may build them from rows.
RECORDS = {"TickArrays", "BarArrays", "FeedEvent", "Trade", "AlertRule", "AlertEvent", "AlertRecord", "Delivery",
           "DatasetInfo"}


def backend_modules() -> list[Path]:
    return sorted(path for name in ("sqlite", "postgres") for path in (STORAGE / name).glob("*.py"))


def test_a_site_without_url_is_an_sqlite_file_and_a_url_picks_its_backend_by_scheme(tmp_path):
    local = storage.site_for(StorageSettings(data_dir=tmp_path), "live")
    assert backend_of(local) is sys.modules["storage.sqlite"]
    assert local.location == str(tmp_path / "live.sqlite3")
    for scheme in ("postgresql", "postgres"):
        server = storage.site_for(StorageSettings(db_url=f"{scheme}://quant:s3cret@db:5432/desk"), "replay-Ticks 1")
        assert backend_of(server).__name__ == "storage.postgres"
        assert (server.schema, server.location) == ("replay_ticks_1", f"{scheme}://quant:***@db:5432/desk "
                                                                      "schema replay_ticks_1")


def test_an_unknown_scheme_is_refused_naming_it_and_the_known_ones():
    with pytest.raises(ValueError, match=r"no storage backend for URL scheme 'mysql' \(known: sqlite, postgresql"):
        backend("mysql")
    with pytest.raises(ValueError, match="'mysql'"):
        Site("live", url="mysql://root@db/desk", schema="live").location  # noqa: B018 - the property raises


def test_a_file_site_has_no_server_and_a_server_site_no_file(tmp_path):
    """Each backend asks the site for its own half; the wrong half is an error naming the site, not None."""
    local = Site("live", tmp_path / "live.sqlite3")
    assert (local.file, local.alerts_path) == (tmp_path / "live.sqlite3", tmp_path / "live-alerts.sqlite3")
    with pytest.raises(ValueError, match=r"site 'live' is not on a database server: it has no URL and schema"):
        local.server  # noqa: B018 - the property raises
    server = Site("replay", url="postgresql://quant@db:5432/desk", schema="replay")
    assert server.server == ("postgresql://quant@db:5432/desk", "replay")
    for half in ("file", "alerts_path"):
        with pytest.raises(ValueError, match=r"site 'replay' is on a database server: it has no tick database file"):
            getattr(server, half)


def test_a_new_backend_is_a_package_plus_one_registry_entry(tmp_path, monkeypatch):
    """Everything the factory does for a site goes through the registry: a fake backend gets every call."""
    calls: list[str] = []
    fake = types.ModuleType("fake_backend")

    def open_ticks(site, *, verify):
        calls.append(f"open_ticks verify={verify}")
        return SqliteTickStore(tmp_path / f"{site.schema}.sqlite3")

    fake.location = lambda site: f"memory {site.schema}"
    fake.exists = lambda site: calls.append("exists") or True
    fake.check = lambda site: calls.append("check")
    fake.open_ticks = open_ticks
    fake.current_writer = lambda site: calls.append("current_writer")
    monkeypatch.setitem(sys.modules, "fake_backend", fake)
    monkeypatch.setitem(BACKENDS, "memory", "fake_backend")
    site = Site("live", url="memory://desk", schema="live")
    assert site.location == "memory live" and site.exists()
    site.check()
    with storage.open_ticks(site, verify=True) as store:
        assert store.tick_count() == 0
    assert storage.current_writer(site) is None
    assert calls == ["exists", "check", "open_ticks verify=True", "current_writer"]


@pytest.mark.parametrize("scheme", sorted(BACKENDS))
def test_every_registered_backend_offers_the_whole_backend_interface(scheme):
    wanted = {name for name, member in inspect.getmembers(Backend, inspect.isfunction) if not name.startswith("_")}
    module = backend(scheme)
    missing = sorted(name for name in wanted if not callable(getattr(module, name, None)))
    assert missing == [], f"backend {scheme!r} lacks {missing}"


def test_only_the_registry_tells_backends_apart():
    """No `if …url is not None` branch anywhere in storage/ but the registry's scheme_of."""
    offenders = []
    for path in sorted(STORAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute)
                    and node.left.attr in ("url", "db_url") and path.name != "registry.py"):
                offenders.append(f"{path.relative_to(STORAGE)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("path", backend_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_backends_map_rows_to_records_only_through_storage_rows(path):
    built = sorted({f"{node.func.id} (line {node.lineno})" for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RECORDS})
    assert built == [], f"{path.name} builds records itself; map rows in storage/rows.py"


def test_rows_round_trip_bars_as_both_backends_store_them():
    import numpy as np

    from storage import rows

    bars = BarArrays(np.array([0, 60_000], dtype=np.int64), *(np.array([1.0, 2.0])[None].repeat(5, 0)),
                     np.array([3, 4], dtype=np.int64), np.array([1.5, 2.5]))
    stored = [row[2:] for row in rows.bar_rows("BTCUSDT", 60_000, bars)]
    again = rows.bar_arrays(stored)
    fields = ("start_ms", "open", "high", "low", "close", "volume", "trades", "vwap")
    assert [getattr(again, f).tolist() for f in fields] == [getattr(bars, f).tolist() for f in fields]
    assert again.start_ms.dtype == again.trades.dtype == np.int64
    assert rows.bar_arrays([]).start_ms.size == 0
