"""``python -m cli.record --top N --quote USDT``: the venue's N most traded symbols (24 h quote volume)
from its listing, on both Binance venues; refused by name when it cannot be done."""

from __future__ import annotations

import signal

import pytest

from testkit.fake_binance import FakeBinance
from testkit.fake_rest import FakeListing, FakeRest
from testkit.waiting import eventually
from tests.test_recorder_cli import recorder

LISTINGS = [FakeListing("BTCUSDT", 3e9), FakeListing("ETHUSDT", 2e9), FakeListing("SOLUSDT", 9e8),
            FakeListing("XRPUSDT", 4e8), FakeListing("BCCUSDT", 5e9, status="BREAK"),
            FakeListing("ETHUSDC", 7e8, quote="USDC"), FakeListing("BTCUSDC", 9e8, quote="USDC")]
QUIET = ("--history-hours", "0", "--backfill-max-trades", "0")


@pytest.mark.parametrize(("futures", "args", "streams"), [
    (False, ("--top", "3"), {"btcusdt@trade", "ethusdt@trade", "solusdt@trade"}),
    (True, ("--source", "binance-futures", "--top", "2", "--quote", "usdc"),
     {"btcusdc@trade", "btcusdc@markPrice@1s", "ethusdc@trade", "ethusdc@markPrice@1s"}),
    # A pair set on purpose is taken as the venue's legs (ETHUSDT.P/BTCUSDT.P), as the picked ones are.
    (True, ("--source", "binance-futures", "--top", "2", "--pair", "ETHUSDT/BTCUSDT"),
     {"btcusdt@trade", "btcusdt@markPrice@1s", "ethusdt@trade", "ethusdt@markPrice@1s"}),
], ids=["spot", "usdm", "usdm-pair"])
def test_the_recorder_watches_the_top_n_by_quote_volume(tmp_path, futures, args, streams):
    with FakeBinance(futures=futures, ping_interval=None) as fake, FakeRest(futures=futures, listings=LISTINGS) as rest:
        proc = recorder(*args, "--ws-url", fake.url, "--rest-url", rest.url, "--data-dir", str(tmp_path), *QUIET)
        try:
            eventually(lambda: fake.open_connections == 1, timeout=30)
            assert fake.subscriptions == [frozenset(streams)]
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    # Leg names: the perpetuals as BTCUSDC.P (stored and shown so); the delisted BCCUSDT never.
    quote = "USDC" if "usdc" in args else "USDT"
    picked = f"BTC{quote}.P,ETH{quote}.P" if futures else "BTCUSDT,ETHUSDT,SOLUSDT"
    assert f"by 24 h quote volume in {quote}: {picked}" in out


@pytest.mark.parametrize(("args", "expected"), [
    (("--top", "3", "--symbols", "BTCUSDT,ETHUSDT"),
     "error: top (--top): picks the symbols, so symbols (--symbols) must not be set too; use one of them\n"),
    (("--top", "0"), "error: top (--top): 0 must be a whole number of symbols, at least 1\n"),
    (("--top", "3", "--quote", "US;DT"), "error: quote (--quote): 'US;DT' is not an asset name such as USDT\n"),
    (("--top", "3", "--source", "simulated"),
     "error: top (--top): the simulated source has no symbol list to rank; use --symbols\n"),
])
def test_a_top_that_cannot_be_done_exits_2_naming_the_setting(tmp_path, args, expected):
    proc = recorder(*args, "--data-dir", str(tmp_path), "--rest-url", "http://127.0.0.1:9", *QUIET)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == expected
    assert not list(tmp_path.iterdir())  # nothing created


def test_a_quote_asset_nothing_trades_in_exits_2_naming_the_ones_there_are(tmp_path):
    with FakeRest(listings=LISTINGS) as rest:
        proc = recorder("--top", "3", "--quote", "EUR", "--rest-url", rest.url, "--data-dir", str(tmp_path), *QUIET)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert out.endswith("error: quote (--quote): no trading symbol is quoted in EUR; the venue's quote assets "
                        "are USDT, USDC\n")


def test_an_unreachable_listing_exits_1_saying_why(tmp_path):
    proc = recorder("--top", "3", "--rest-url", "http://127.0.0.1:9", "--data-dir", str(tmp_path), *QUIET)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert ("error: cannot pick the top 3 symbols: cannot fetch the symbol list: giving up on "
            "http://127.0.0.1:9/api/v3/exchangeInfo?showPermissionSets=false after 2 attempts (Binance REST "
            "unreachable: ConnectionRefusedError") in out
    assert "Traceback" not in out and not list(tmp_path.iterdir())


def test_alert_rules_follow_the_picked_pair_unless_one_was_set(tmp_path):
    """The default alert pair is the second symbol over the first: of the top N, not of the defaults;
    a pair set on purpose must be among the picked symbols."""
    with FakeRest(listings=LISTINGS) as rest:
        proc = recorder("--top", "2", "--pair", "ETHUSDT/XRPUSDT", "--rest-url", rest.url,
                        "--data-dir", str(tmp_path), *QUIET)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert out.endswith("error: pair (--pair): 'ETHUSDT/XRPUSDT' must be two different watched symbols, Y/X\n")
