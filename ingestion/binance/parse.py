"""Pure parsers for Binance spot and USDⓈ-M futures WebSocket frames: one function per message type.

Nothing here does I/O. :func:`parse_frame` unwraps the combined-stream envelope and dispatches
on the event type; unknown events come back as :class:`UnknownMessage` (the source counts them),
malformed input raises :class:`MalformedMessage` (the source logs and counts it). Neither ever
stops the feed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingestion.source import excerpt
from records import MarkPrice, Trade, time_problem

# Ids and times are stored as SQLite INTEGER and numpy int64: anything larger is garbage, not a trade.
MAX_ID = 2**63 - 1


class MalformedMessage(ValueError):
    """A frame that is not valid JSON or lacks/garbles a required field."""


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """Binance's notice that this server will close the connection soon. ``ts_ms``: event time."""

    ts_ms: int | None


@dataclass(frozen=True, slots=True)
class SubscriptionReply:
    """The answer to a SUBSCRIBE/UNSUBSCRIBE request: ``error`` is None on success, else Binance's message."""

    request_id: int | str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """Valid JSON we do not handle (other event types)."""

    event_type: str


@dataclass(frozen=True, slots=True)
class NonMarketTrade:
    """A futures trade that is not a market print (``"X"`` other than ``MARKET``).

    ``kind`` is Binance's ``X``: ``INSURANCE_FUND`` (a liquidation taken over by the insurance fund),
    ``ADL`` (auto-deleveraging) or ``NA`` (the ``p="0"``, ``q="0"`` rows). They are not prices
    anyone traded at in the order book, so they stay out of bars and storage; but each consumes a
    trade id, which the engine's sequencer must see so that it does not report a false gap.
    """

    symbol: str
    trade_id: int
    kind: str


Message = Trade | NonMarketTrade | MarkPrice | ServerShutdown | SubscriptionReply | UnknownMessage

#: The only futures trade type that is a market print (spot payloads carry no ``X`` and are all market prints).
MARKET = "MARKET"


def parse_trade(payload: dict[str, Any], recv_ms: int, suffix: str = "", *, live: bool = False
                ) -> Trade | NonMarketTrade:
    """Parse a spot or USDⓈ-M futures ``<symbol>@trade`` payload.

    Example payloads (prices and quantities are decimal strings), spot::

        {"e":"trade","E":1765788195443,"s":"BTCUSDT","t":5612345678,"p":"89806.80000000",
         "q":"0.00200000","T":1765788195442,"m":true,"M":true}

    and futures, whose ``X`` is ``MARKET``, ``INSURANCE_FUND``, ``ADL`` or ``NA``::

        {"e":"trade","E":1765788195444,"T":1765788195443,"s":"BTCUSDT","t":6871234567,
         "p":"89806.80","q":"0.002","X":"MARKET","m":true}

    ``ts_ms`` is the trade time ``T`` (not the event time ``E``); ``m`` is "buyer is maker". A
    payload with an ``X`` other than ``MARKET`` is a :class:`NonMarketTrade` (its price and
    quantity are not checked: ``NA`` rows carry zeros). ``suffix`` is added to the symbol: the
    venue's leg name (``.P`` on USDⓈ-M, :class:`domain.Leg`), so that a perpetual's trades are never
    taken for the spot symbol's.

    ``T`` must be a time market data can carry (:func:`records.time_problem`: 1973 to 2099) and, when
    ``live`` (``recv_ms`` is when the frame arrived from the exchange), at most
    :data:`records.LIVE_SKEW_MS` (a day) after ``recv_ms``: an absurd time is a malformed message,
    never a trade.
    """
    kind = payload.get("X", MARKET)
    if kind != MARKET:
        return _non_market(payload, kind, suffix)
    try:
        symbol = payload["s"]
        trade_id = payload["t"]
        ts_ms = payload["T"]
        price = float(payload["p"])
        qty = float(payload["q"])
        buyer_is_maker = payload["m"]
    except KeyError as exc:
        raise MalformedMessage(f"trade payload lacks field {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise MalformedMessage(f"trade payload has a non-numeric price {excerpt(payload.get('p'))} or quantity "
                               f"{excerpt(payload.get('q'))}") from None
    if not isinstance(symbol, str) or not symbol:
        raise MalformedMessage(f"trade payload has an invalid symbol {excerpt(symbol)}")
    if type(trade_id) is not int or type(ts_ms) is not int or not (0 <= trade_id <= MAX_ID and 0 < ts_ms <= MAX_ID):
        raise MalformedMessage(f"trade payload has an invalid id {excerpt(trade_id)} or time {excerpt(ts_ms)}")
    if not (math.isfinite(price) and price > 0 and math.isfinite(qty) and qty >= 0):
        raise MalformedMessage(f"trade payload has an invalid price {price!r} or quantity {qty!r}")
    if type(buyer_is_maker) is not bool:
        raise MalformedMessage(f"trade payload has a non-boolean 'm' {excerpt(buyer_is_maker)}")
    problem = time_problem(ts_ms, recv_ms if live else None)
    if problem is not None:
        raise MalformedMessage(f"trade payload has an impossible trade time 'T': {problem}")
    return Trade(symbol.upper() + suffix, trade_id, ts_ms, recv_ms, price, qty, buyer_is_maker)


def _non_market(payload: dict[str, Any], kind: object, suffix: str) -> NonMarketTrade:
    """The id-consuming, non-market futures trade ``payload`` (its ``X`` is ``kind``)."""
    symbol, trade_id = payload.get("s"), payload.get("t")
    if not isinstance(kind, str) or not kind:
        raise MalformedMessage(f"trade payload has an invalid type 'X' {excerpt(kind)}")
    if not isinstance(symbol, str) or not symbol:
        raise MalformedMessage(f"trade payload has an invalid symbol {excerpt(symbol)}")
    if type(trade_id) is not int or not 0 <= trade_id <= MAX_ID:
        raise MalformedMessage(f"trade payload has an invalid id {excerpt(trade_id)}")
    return NonMarketTrade(symbol.upper() + suffix, trade_id, kind)


def parse_mark_price(payload: dict[str, Any], recv_ms: int, suffix: str = "", *, live: bool = False) -> MarkPrice:
    """Parse a USDⓈ-M ``<symbol>@markPrice@1s`` payload (one a second per symbol)::

        {"e":"markPriceUpdate","E":1765788195000,"s":"BTCUSDT","p":"89806.80000000",
         "P":"89790.12345678","i":"89811.54347826","r":"0.00010000","T":1765814400000}

    ``p`` mark price, ``P`` estimated settle price (not kept), ``i`` index price, ``r`` funding rate
    (a fraction per funding interval, negative when shorts pay longs), ``T`` next funding time and
    ``E`` event time (UTC epoch ms); ``recv_ms`` is when it arrived here; ``suffix`` makes the symbol
    the leg name (``.P``), as in :func:`parse_trade`. Anything missing,
    non-numeric, non-finite, a non-positive price or a rate of 100 % or more raises
    :class:`MalformedMessage`: a garbled value is never shown; so do times market data cannot carry
    (``E`` as a trade's ``T`` in :func:`parse_trade`, ``live`` included; ``T`` within 1973–2099).
    """
    try:
        symbol = payload["s"]
        event_ms = payload["E"]
        next_ms = payload["T"]
        raw = {name: payload[name] for name in ("p", "i", "r")}
    except KeyError as exc:
        raise MalformedMessage(f"markPriceUpdate payload lacks field {exc.args[0]!r}") from None
    if not isinstance(symbol, str) or not symbol:
        raise MalformedMessage(f"markPriceUpdate payload has an invalid symbol {excerpt(symbol)}")
    if type(event_ms) is not int or type(next_ms) is not int or not (0 < event_ms <= MAX_ID and 0 < next_ms <= MAX_ID):
        raise MalformedMessage(f"markPriceUpdate payload has an invalid event time {excerpt(event_ms)} "
                               f"or next funding time {excerpt(next_ms)}")
    problem = time_problem(event_ms, recv_ms if live else None) or time_problem(next_ms)
    if problem is not None:
        raise MalformedMessage(f"markPriceUpdate payload has an impossible event or next funding time: {problem}")
    values: dict[str, float] = {}
    for name, text in raw.items():
        # Binance sends decimal strings; a JSON number, bool or null is not what it sends.
        value = finite_decimal(text)
        if value is None or (name != "r" and value <= 0) or (name == "r" and abs(value) >= 1):
            raise MalformedMessage(f"markPriceUpdate payload has an invalid {_MARK_FIELDS[name]} "
                                   f"{name!r}: {excerpt(text)}")
        values[name] = value
    return MarkPrice(symbol.upper() + suffix, event_ms, recv_ms, values["p"], values["i"], values["r"], next_ms)


_MARK_FIELDS = {"p": "mark price", "i": "index price", "r": "funding rate"}


def finite_decimal(text: object) -> float | None:
    """The finite value of a decimal string (how Binance sends prices and rates), or None: a JSON
    number, bool or null is not what it sends."""
    if not isinstance(text, str):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_server_shutdown(payload: dict[str, Any]) -> ServerShutdown:
    """Parse the ``serverShutdown`` notice, e.g. ``{"e":"serverShutdown","E":1765788195443}``."""
    event_ms = payload.get("E")
    return ServerShutdown(event_ms if type(event_ms) is int else None)


_PARSERS: dict[str, Callable[[dict[str, Any], int, str, bool], Message]] = {
    "trade": lambda payload, recv_ms, suffix, live: parse_trade(payload, recv_ms, suffix, live=live),
    "markPriceUpdate": lambda payload, recv_ms, suffix, live: parse_mark_price(payload, recv_ms, suffix, live=live),
    "serverShutdown": lambda payload, _recv_ms, _suffix, _live: parse_server_shutdown(payload),
}


def parse_subscription_reply(payload: dict[str, Any]) -> SubscriptionReply:
    """Parse ``{"result":null,"id":1}`` (success) or ``{"error":{"code":2,"msg":"Invalid request"},"id":1}``."""
    request_id = payload.get("id")
    error = payload.get("error")
    if error is None:
        return SubscriptionReply(request_id if isinstance(request_id, (int, str)) else None, None)
    text = error.get("msg") if isinstance(error, dict) else error
    return SubscriptionReply(request_id if isinstance(request_id, (int, str)) else None, str(text)[:200])


def parse_payload(payload: Any, recv_ms: int, suffix: str = "", *, live: bool = False) -> Message:
    """Dispatch one unwrapped payload (a JSON object) on its ``"e"`` field; ``suffix`` and ``live`` as in
    :func:`parse_trade`."""
    if not isinstance(payload, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(payload).__name__}")
    event_type = payload.get("e")
    parser = _PARSERS.get(event_type) if isinstance(event_type, str) else None
    if parser is None:
        if "id" in payload and ("result" in payload or "error" in payload):
            return parse_subscription_reply(payload)
        label = event_type if isinstance(event_type, str) else ",".join(sorted(payload)[:4]) or "{}"
        return UnknownMessage(label)
    return parser(payload, recv_ms, suffix, live)


def parse_frame(frame: str | bytes, recv_ms: int, suffix: str = "", *, live: bool = False) -> Message:
    """Parse one text frame, raw (``{"e":...}``) or combined (``{"stream":...,"data":{...}}``);
    ``suffix`` is added to trade and mark-price symbols (the venue's leg names, :func:`parse_trade`).
    ``live``: the frame just arrived from the exchange at ``recv_ms``, so its times may not lie more than
    a day after it (a recording's frames are only held to the range any market time lies in).

    Example combined frame::

        {"stream":"btcusdt@trade","data":{"e":"trade","E":1765788195443,"s":"BTCUSDT",...}}
    """
    try:
        message = json.loads(frame)
    except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: absurdly nested input
        raise MalformedMessage(f"invalid JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    if isinstance(message, dict) and "data" in message and "stream" in message:
        message = message["data"]
    return parse_payload(message, recv_ms, suffix, live=live)
