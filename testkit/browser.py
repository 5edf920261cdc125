"""Headless Chromium and a local Streamlit server, as the browser test and ``bench/viewers.py`` use them.

Debian's ``chromium`` is driven by Playwright with ``executable_path``: Playwright cannot download its
own browser here.
"""

from __future__ import annotations

import os
import shutil
import socket
import urllib.request

import pytest

#: Debian's Chromium, or None when it is not installed (``apt-get install chromium``).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without these, Chromium tries to reach Google services, which this network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    """True once the Streamlit server at ``url`` answers its health check (``/_stcore/health``) with 200."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def require_chromium() -> str:
    """Debian's Chromium for a browser test: under CI (``CI`` set) its absence fails the test, since
    ``.ci/run`` installs it; elsewhere the test is skipped with how to install it."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is not installed; .ci/run should have installed it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return CHROMIUM
