"""The research history's Parquet store (storage/research.py): layout, atomic whole months, reads of
only what a scan asks for, refusals that name the problem."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domain import ONE_MINUTE, Leg, Market
from storage.errors import StorageError
from storage.research import COLUMNS, ResearchStore, months_between

JAN = 1_704_067_200_000  # 2024-01-01T00:00Z, UTC epoch ms
FEB = 1_706_745_600_000  # 2024-02-01T00:00Z


def month_bars(start_ms: int, count: int, price: float = 100.0) -> pd.DataFrame:
    times = start_ms + 60_000 * np.arange(count, dtype=np.int64)
    close = price + np.arange(count, dtype=float)
    return pd.DataFrame({"open_time": times, "open": close, "high": close + 1, "low": close - 1, "close": close,
                         "volume": 1.0, "quote_volume": close, "trades": np.ones(count, dtype=np.int64)})


def test_a_month_round_trips_and_reads_only_the_asked_span(tmp_path):
    store = ResearchStore(str(tmp_path))
    path = store.write_month(Market.USDM, ONE_MINUTE, "ETHUSDT", "2024-01", month_bars(JAN, 10))
    assert path == f"{tmp_path}/market=um/interval=1m/symbol=ETHUSDT/month=2024-01/bars.parquet"
    got = store.bars(Market.USDM, ONE_MINUTE, "ETHUSDT", JAN + 120_000, JAN + 300_000)
    assert list(got.columns) == list(COLUMNS)
    assert got["open_time"].tolist() == [JAN + 60_000 * i for i in range(2, 5)]
    assert store.months(Market.USDM, ONE_MINUTE, "ETHUSDT") == ["2024-01"]
    assert store.symbols(Market.USDM, ONE_MINUTE) == ["ETHUSDT"]
    assert store.symbols(Market.SPOT, ONE_MINUTE) == []  # markets never mix


def test_writing_a_month_again_replaces_it_and_leaves_no_temporary(tmp_path):
    store = ResearchStore(str(tmp_path))
    store.write_month(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01", month_bars(JAN, 10))
    store.write_month(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01", month_bars(JAN, 5, price=7.0))
    got = store.bars(Market.SPOT, ONE_MINUTE, "BTCUSDT", JAN, FEB)
    assert got["close"].tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["bars.parquet"]


def test_closes_join_symbols_across_months_with_nan_where_a_symbol_has_no_bar(tmp_path):
    store = ResearchStore(str(tmp_path))
    store.write_month(Market.SPOT, ONE_MINUTE, "AAAUSDT", "2024-01", month_bars(FEB - 120_000, 2))
    store.write_month(Market.SPOT, ONE_MINUTE, "AAAUSDT", "2024-02", month_bars(FEB, 2, price=50.0))
    store.write_month(Market.SPOT, ONE_MINUTE, "BBBUSDT", "2024-02", month_bars(FEB + 60_000, 1))
    closes = store.closes(Market.SPOT, ONE_MINUTE, ["AAAUSDT", "BBBUSDT"], JAN, FEB + 3_600_000)
    assert list(closes.columns) == ["AAAUSDT", "BBBUSDT"]
    assert str(closes.index.tz) == "UTC" and len(closes) == 4
    assert closes["AAAUSDT"].tolist() == [100.0, 101.0, 50.0, 51.0]
    assert np.isnan(closes["BBBUSDT"].iloc[2]) and closes["BBBUSDT"].iloc[3] == 100.0


@pytest.mark.parametrize(("bars", "message"), [
    (month_bars(FEB, 1), "starts outside the month"),
    (month_bars(JAN + 1, 2), "grid"),
    (pd.concat([month_bars(JAN, 2), month_bars(JAN, 1)]), "strictly increasing"),
    (month_bars(JAN, 2).drop(columns="trades"), "trades"),
])
def test_bad_bars_are_refused_naming_the_problem_and_nothing_is_written(tmp_path, bars, message):
    store = ResearchStore(str(tmp_path))
    with pytest.raises(ValueError, match=message):
        store.write_month(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01", bars)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize(("symbol", "month"), [("../etc", "2024-01"), ("BTCUSDT", "2024-13"), ("btc", "2024-01")])
def test_names_that_could_leave_the_store_are_refused(tmp_path, symbol, month):
    with pytest.raises(ValueError, match="invalid"):
        ResearchStore(str(tmp_path)).path(Market.SPOT, ONE_MINUTE, symbol, month)


def test_months_between_covers_the_half_open_span():
    assert months_between(JAN, FEB) == ["2024-01"]
    assert months_between(JAN, FEB + 1) == ["2024-01", "2024-02"]
    assert months_between(FEB, FEB) == []


def test_leg_names_say_the_market():
    assert Leg.parse(" ethusdt.p ") == Leg(Market.USDM, "ETHUSDT")
    assert Leg.parse("BTCUSDT").name == "BTCUSDT" and Leg(Market.USDM, "BTCUSDT").name == "BTCUSDT.P"
    for bad in ("ETH;DROP", "E", "ETHUSDT.Q", "ETHUSDT.P.P"):
        with pytest.raises(ValueError, match="invalid leg"):
            Leg.parse(bad)


def test_a_months_sources_live_in_its_own_file_and_go_with_it(tmp_path):
    """Provenance (archive file -> sha256) is read back from the month's Parquet metadata: absent month None,
    a month written without sources {}, a rewrite replaces them, an unreadable file None (to be written again)."""
    store = ResearchStore(str(tmp_path))
    assert store.month_sources(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01") is None
    path = store.write_month(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01", month_bars(JAN, 10),
                             sources={"BTCUSDT-1m-2024-01.zip": "ab" * 32})
    assert store.month_sources(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01") == {"BTCUSDT-1m-2024-01.zip": "ab" * 32}
    assert len(store.bars(Market.SPOT, ONE_MINUTE, "BTCUSDT", JAN, FEB)) == 10  # readers see bars as before
    store.write_month(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01", month_bars(JAN, 5))
    assert store.month_sources(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01") == {}
    with open(path, "r+b") as damaged:
        damaged.truncate(20)
    assert store.month_sources(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01") is None


@pytest.mark.parametrize(("bars", "message"), [
    (pd.concat([month_bars(JAN, 5), month_bars(JAN + 120_000, 2)]).sort_values("open_time", kind="stable"),
     "strictly increasing"),
    (month_bars(JAN + 7, 5), "grid"),
    (pd.concat([month_bars(JAN, 2), month_bars(FEB, 1)]), "starts outside the month"),
])
def test_a_month_file_not_written_by_the_store_is_named_when_read(tmp_path, bars, message):
    # Written behind the store's back (another tool, a damaged copy): duplicated bar times once surfaced as
    # pandas' "cannot reindex on an axis with duplicate labels" from a worker, naming no symbol or file.
    store = ResearchStore(str(tmp_path))
    store.write_month(Market.SPOT, ONE_MINUTE, "AAAUSDT", "2024-01", month_bars(JAN, 5))
    path = store.path(Market.SPOT, ONE_MINUTE, "BBBUSDT", "2024-01")
    (tmp_path / path).parent.mkdir(parents=True)
    bars.to_parquet(path, index=False)
    with pytest.raises(StorageError, match=rf"cannot read {re.escape(path)}: .*{message}.* import the month again"):
        store.closes(Market.SPOT, ONE_MINUTE, ["AAAUSDT", "BBBUSDT"], JAN, FEB + 3_600_000)
    assert len(store.bars(Market.SPOT, ONE_MINUTE, "AAAUSDT", JAN, FEB)) == 5  # the store's own files still read


def test_ctrl_c_while_a_month_is_written_leaves_the_old_month_whole_and_no_temporary(tmp_path, monkeypatch):
    """A KeyboardInterrupt mid-write (Ctrl-C in cli.archives) used to leave the half-written temporary
    file in the month's folder for ever: only an OSError removed it."""
    import pyarrow.parquet as pq

    store = ResearchStore(str(tmp_path))
    path = store.write_month(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01", month_bars(JAN, 10))
    real = pq.write_table

    def interrupted(table, where, **kwargs):
        real(table.slice(0, 3), where, **kwargs)  # part of the file is on disk when the key is pressed
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write_month(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-01", month_bars(JAN, 20, price=5.0))
    folder = path.rsplit("/", 1)[0]
    assert sorted(p.name for p in Path(folder).iterdir()) == ["bars.parquet"]
    got = store.bars(Market.SPOT, ONE_MINUTE, "BTCUSDT", JAN, FEB)
    assert got["close"].tolist() == month_bars(JAN, 10)["close"].tolist()  # the old month, whole
