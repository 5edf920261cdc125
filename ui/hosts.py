"""Refuse requests whose ``Host`` is not one of the dashboard's names: the guard against DNS rebinding.

Binding to 127.0.0.1 does not stop a browser: a page on ``evil.example`` can make its own name
resolve to 127.0.0.1, and the browser then treats the dashboard as ``evil.example``'s own origin
(same-origin reads, WebSocket, XSRF cookie and all). What it cannot change is the ``Host`` header
its requests carry, ``evil.example:8501``. :class:`AllowedHostsMiddleware` wraps the whole ASGI
app (``server.py``): Streamlit's page, static files, health checks, its WebSocket and the
``/live/*`` routes, so no route answers such a request: HTTP gets a plain ``403``, a WebSocket
upgrade is closed before it is accepted (the server answers ``403`` too).

The names come from ``QUANT_ALLOWED_HOSTS`` (:func:`config.allowed_hosts`); the port is not
compared (the attacker's page cannot pick the name, and the port is the dashboard's anyway).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

REFUSED = b"403 Forbidden: this dashboard does not answer to that host name (see QUANT_ALLOWED_HOSTS)\n"
_LOGGED_MAX = 100  # distinct refused names logged per process: a hostile page cannot flood the log


def host_name(header: str) -> str | None:
    """The name in a ``Host`` header value, lower-cased, without port or trailing dot; None if malformed.

    ``Localhost:8501`` → ``localhost``; ``[::1]:8501`` → ``::1``; ``a:b:c`` or ``x:port`` → None.
    """
    value = header.strip().lower()
    if value.startswith("["):
        address, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
        try:
            return str(ipaddress.IPv6Address(address))
        except ValueError:
            return None
    name, colon, port = value.partition(":")
    if colon and not (port.isdigit() and len(port) <= 5):
        return None
    name = name.rstrip(".")
    return name or None


class AllowedHostsMiddleware:
    """ASGI middleware: HTTP and WebSocket requests whose ``Host`` names none of ``hosts`` are refused.

    A request with no ``Host`` header or more than one is refused too (there is nothing to trust).
    Lifespan and any other scope types pass through.
    """

    def __init__(self, app: Any, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = frozenset(hosts)
        self._logged: set[str] = set()
        self._logged_lock = threading.Lock()

    def allows(self, scope: dict[str, Any]) -> bool:
        values = [value for key, value in scope.get("headers", ()) if key.lower() == b"host"]
        if len(values) != 1:
            return False
        return host_name(values[0].decode("latin-1")) in self.hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self.allows(scope):
            await self.app(scope, receive, send)
            return
        self._log(scope)
        if scope["type"] == "websocket":
            # Closing before accepting: the server answers the upgrade with 403 and no socket opens.
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(REFUSED)).encode()), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": REFUSED})

    def _log(self, scope: dict[str, Any]) -> None:
        """One warning per distinct refused ``Host`` (at most :data:`_LOGGED_MAX`), so a proxy set up wrong shows."""
        shown = ",".join(repr(value.decode("latin-1")[:80]) for key, value in scope.get("headers", ())
                         if key.lower() == b"host") or "none"
        with self._logged_lock:
            if shown in self._logged or len(self._logged) >= _LOGGED_MAX:
                return
            self._logged.add(shown)
        log.warning("refused a %s request for Host %s: not in %s (set QUANT_ALLOWED_HOSTS to the names the "
                    "dashboard is reached by)", scope["type"], shown, ", ".join(sorted(self.hosts)))
