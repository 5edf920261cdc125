import json
from collections import Counter

import pytest

from ingestion.binance.parse import (
    MalformedMessage,
    ServerShutdown,
    SubscriptionReply,
    UnknownMessage,
    parse_frame,
    parse_trade,
)
from records import MarkPrice, Trade
from tests.shared_data import CRYPTOFEED_FRAMES, require

# Exact spot @trade wire format (combined-stream wrapper, 8-decimal strings), with a trade from
# the recorded BTCUSDT session in ../shared.
TRADE_FRAME = (
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1765788195444,"s":"BTCUSDT","t":5612345678,'
    '"p":"89806.80000000","q":"0.00200000","T":1765788195443,"m":true,"M":true}}'
)


def test_combined_trade_frame():
    trade = parse_frame(TRADE_FRAME, recv_ms=1765788195500)
    assert trade == Trade("BTCUSDT", 5612345678, 1765788195443, 1765788195500, 89806.8, 0.002, True)


def test_raw_trade_payload_and_bytes_input():
    payload = json.loads(TRADE_FRAME)["data"]
    assert parse_frame(json.dumps(payload).encode(), 1) == parse_trade(payload, 1)


def test_trade_time_is_T_not_E():
    assert parse_frame(TRADE_FRAME, 0).ts_ms == 1765788195443


def test_server_shutdown_wrapped_or_not():
    assert parse_frame('{"e":"serverShutdown","E":1765788195443}', 0) == ServerShutdown(1765788195443)
    wrapped = '{"stream":"btcusdt@trade","data":{"e":"serverShutdown","E":5}}'
    assert parse_frame(wrapped, 0) == ServerShutdown(5)


def test_every_real_spot_frame_parses_without_raising():
    """1,003 real combined-stream frames (depth, bookTicker, aggTrade, kline): none is a trade."""
    lines = require(CRYPTOFEED_FRAMES).read_text().splitlines()[1:]
    kinds = Counter()
    for line in lines:
        _, frame = line.split(": ", 1)
        message = parse_frame(frame, 0)
        assert isinstance(message, UnknownMessage)
        kinds[message.event_type] += 1
    assert kinds["depthUpdate"] == 546
    assert kinds["aggTrade"] == 28
    assert kinds["kline"] == 17
    # bookTicker payloads carry no "e" field: they are labelled by their keys.
    assert sum(kinds.values()) == 1003


def test_subscription_replies_are_recognised_not_errors():
    assert parse_frame('{"result":null,"id":1}', 0) == SubscriptionReply(1, None)
    refused = parse_frame('{"error":{"code":2,"msg":"Invalid request: unknown stream"},"id":7}', 0)
    assert refused == SubscriptionReply(7, "Invalid request: unknown stream")
    assert isinstance(parse_frame('{"e":"kline","E":1}', 0), UnknownMessage)


def test_malformed_messages_quote_only_a_short_excerpt_of_a_field():
    secret = "db_password=hunter2-and-much-more-of-a-file"
    with pytest.raises(MalformedMessage) as caught:
        parse_frame(json.dumps({"e": "trade", "s": "BTCUSDT", "t": 1, "p": secret, "q": "1", "T": 1, "m": True}), 0)
    assert "hunter2-and-much-more" not in str(caught.value) and "'db_password=hun…" in str(caught.value)


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        ("{not json", "invalid JSON"),
        ("[1,2]", "expected a JSON object"),
        ('{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","m":true}', "lacks field 'T'"),
        ('{"e":"trade","s":"BTCUSDT","t":1,"p":"abc","q":"1","T":5,"m":true}', "non-numeric"),
        ('{"e":"trade","s":"BTCUSDT","t":1,"p":"0","q":"0","T":5,"m":true}', "invalid price"),
        ('{"e":"trade","s":"BTCUSDT","t":1,"p":"NaN","q":"1","T":5,"m":true}', "invalid price"),
        ('{"e":"trade","s":"BTCUSDT","t":"1","p":"1","q":"1","T":5,"m":true}', "invalid id"),
        ('{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":5,"m":"yes"}', "non-boolean"),
        ('{"e":"trade","s":"","t":1,"p":"1","q":"1","T":5,"m":true}', "invalid symbol"),
        ('{"e":"trade","s":"BTCUSDT","t":18446744073709551616,"p":"1","q":"1","T":5,"m":true}', "invalid id"),
        ('{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":-5,"m":true}', "invalid id"),
        ("[" * 100_000 + "]" * 100_000, "RecursionError"),
    ],
)
def test_malformed_frames_raise_a_named_error(frame, match):
    with pytest.raises(MalformedMessage, match=match):
        parse_frame(frame, 0)


# Exact USDⓈ-M <symbol>@markPrice@1s wire format (combined-stream wrapper), Binance's key order.
MARK_FRAME = (
    '{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1765788195000,"s":"BTCUSDT",'
    '"p":"89806.80000000","P":"89790.12345678","i":"89811.54347826","r":"-0.00002500","T":1765814400000}}'
)


def test_mark_price_frame_is_a_mark_price_record():
    mark = parse_frame(MARK_FRAME, 1765788195020)
    assert mark == MarkPrice("BTCUSDT", 1765788195000, 1765788195020, 89806.8, 89811.54347826, -0.000025, 1765814400000)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"p": None}, "invalid mark price 'p'"),
        ({"p": "0"}, "invalid mark price 'p'"),
        ({"p": 89806.8}, "invalid mark price 'p'"),  # a JSON number: not what Binance sends
        ({"i": "NaN"}, "invalid index price 'i'"),
        ({"i": "-1"}, "invalid index price 'i'"),
        ({"r": ""}, "invalid funding rate 'r'"),
        ({"r": "inf"}, "invalid funding rate 'r'"),
        ({"r": "1.5"}, "invalid funding rate 'r'"),
        ({"T": "1765814400000"}, "next funding time"),
        ({"T": 0}, "next funding time"),
        ({"E": True}, "invalid event time"),
        ({"s": ""}, "invalid symbol"),
        ({"s": None}, "invalid symbol"),
    ],
)
def test_malformed_mark_price_fields_raise_a_named_error(change, match):
    payload = json.loads(MARK_FRAME)["data"] | change
    with pytest.raises(MalformedMessage, match=match):
        parse_frame(json.dumps(payload), 0)


@pytest.mark.parametrize("field", ["s", "E", "p", "i", "r", "T"])
def test_mark_price_without_a_field_is_malformed(field):
    payload = json.loads(MARK_FRAME)["data"]
    del payload[field]
    with pytest.raises(MalformedMessage, match=f"markPriceUpdate payload lacks field '{field}'"):
        parse_frame(json.dumps(payload), 0)


# ------------------------------------------------------------------------------------------ absurd times (issue 22)
RECV = 1765788195500
ABSURD_MS = [2**63 - 1, 2**62, 5, 99_999_999_999, 4_102_444_800_000]  # int64's end, 2262+, 1970, 1973-, 2100


def trade_at(ts_ms: int) -> dict:
    return json.loads(TRADE_FRAME)["data"] | {"T": ts_ms}


@pytest.mark.parametrize("ts_ms", ABSURD_MS)
@pytest.mark.parametrize("live", [False, True])
def test_a_trade_time_no_page_could_show_is_malformed_live_or_recorded(ts_ms, live):
    """2**63 - 1 ms passed the old id/time check, was stored, then broke the symbol's pages in pandas."""
    with pytest.raises(MalformedMessage, match=r"impossible trade time 'T': time \d+ .*is outside 1973-03-03"):
        parse_frame(json.dumps(trade_at(ts_ms)), RECV, live=live)


def test_a_live_trade_more_than_a_day_after_it_arrived_is_malformed_and_an_older_one_is_a_late_trade():
    day = 24 * 3_600_000
    with pytest.raises(MalformedMessage, match=r"24\.0 h after it was received \(2025-12-15T08:43:15\.500Z\)"):
        parse_trade(trade_at(RECV + day + 1), RECV, live=True)
    assert parse_trade(trade_at(RECV + day), RECV, live=True).ts_ms == RECV + day  # a clock a day behind
    assert parse_trade(trade_at(RECV - 400 * day), RECV, live=True).ts_ms == RECV - 400 * day
    # A recording is held to the fixed range only: its frames arrived long ago.
    assert parse_trade(trade_at(RECV + 3 * 365 * day), RECV).ts_ms == RECV + 3 * 365 * day


@pytest.mark.parametrize(("change", "live"), [({"E": 2**63 - 1}, False), ({"T": 2**62}, False),
                                              ({"E": RECV + 25 * 3_600_000}, True)])
def test_a_mark_price_with_an_impossible_time_is_malformed(change, live):
    payload = json.loads(MARK_FRAME)["data"] | change
    with pytest.raises(MalformedMessage, match="markPriceUpdate payload has an impossible event or next funding time"):
        parse_frame(json.dumps(payload), RECV, live=live)
