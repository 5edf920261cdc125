"""A loopback webhook endpoint for tests: scripted status codes, the requests it got, the alerts it accepted."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHook:
    """A webhook endpoint on 127.0.0.1.

    Answers each POST with the next code of ``statuses`` (200 once they run out), with a
    ``Location`` header when ``location`` is set, and keeps the JSON bodies it accepted (2xx) and
    their ``Idempotency-Key`` headers. GETs are answered 200 like many real endpoints do;
    ``methods`` records every request. While ``gate`` is cleared, requests wait inside the
    handler, which stands in for a slow endpoint. Thread-safe: read the lists under ``lock``
    or through :meth:`accepted_keys`.
    """

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.reason: str | None = None  # a reason phrase instead of the standard one
        self.location: str | None = None
        self.bodies: list[dict] = []
        self.keys: list[str | None] = []  # Idempotency-Key header of each accepted POST
        self.methods: list[str] = []
        self.requests = 0
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:
                    hook.requests += 1
                    hook.methods.append("POST")
                    status = hook.statuses.pop(0) if hook.statuses else 200
                hook.gate.wait(10)
                if status < 300:
                    with hook.lock:
                        hook.bodies.append(body)
                        hook.keys.append(self.headers.get("Idempotency-Key"))
                self.send_response(status, hook.reason)
                if hook.location is not None:
                    self.send_header("Location", hook.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                with hook.lock:
                    hook.methods.append("GET")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-token"
        # A short poll interval keeps shutdown() (which waits for the next poll) fast.
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="fake-hook", daemon=True)
        self._thread.start()

    def accepted_keys(self) -> Counter[str | None]:
        """How many times each idempotency key (header) was accepted."""
        with self.lock:
            return Counter(self.keys)

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
