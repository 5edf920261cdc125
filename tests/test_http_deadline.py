"""ingestion/http.py: every step of an exchange ends by one deadline, the name lookup included."""

from __future__ import annotations

import re
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from alerts.webhook import WebhookEndpoint
from ingestion import http as deadline_http
from ingestion.http import connect, resolve
from testkit.fake_hook import FakeHook


@pytest.fixture
def stuck_resolver(monkeypatch: pytest.MonkeyPatch):
    """getaddrinfo that hangs (a dead DNS server) until the test ends, for one name only."""
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "hook.example":
            release.wait(30)
            raise socket.gaierror("released")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(deadline_http.socket, "getaddrinfo", getaddrinfo)
    yield
    release.set()


def test_a_name_lookup_that_hangs_is_abandoned_within_the_deadline(stuck_resolver):
    # The lookup itself hangs 30 s and then fails with another error: this one comes from the bound.
    with pytest.raises(TimeoutError, match=r"name lookup of 'hook\.example' took longer than 0\.2 s"):
        resolve("hook.example", 80, 0.2)


def test_a_webhook_behind_a_hanging_name_lookup_fails_retryably_by_its_deadline(stuck_resolver):
    endpoint = WebhookEndpoint("http://hook.example/path", timeout_s=0.2, deadline_s=0.5)
    attempt = endpoint.post({"text": "x"}, "key")
    assert attempt.retryable
    # The lookup gets at most half of what is left of the deadline: 0.2 s, less on a slow machine.
    assert re.fullmatch(r"TimeoutError: name lookup of 'hook\.example' took longer than 0\.[0-9]+ s", attempt.error)


def test_connect_uses_the_looked_up_address_and_the_exchange_still_works():
    hook = FakeHook()
    try:
        endpoint = WebhookEndpoint(hook.url, timeout_s=2.0)
        assert endpoint.post({"text": "x"}, "key").error is None
        assert hook.keys == ["key"]
    finally:
        hook.close()


def test_an_unknown_name_fails_with_the_resolvers_error(monkeypatch: pytest.MonkeyPatch):
    def getaddrinfo(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(deadline_http.socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(socket.gaierror, match="Name or service not known"):
        connect(urlsplit("http://nowhere.example/"), 1.0, time.monotonic() + 5)
