"""Test kit shared by ``tests/`` and ``bench/``: fakes of Binance (WebSocket and REST), fake sources,
builders of records, :func:`~testkit.waiting.eventually` (poll with a deadline) and how Chromium is launched
(:mod:`testkit.browser`).

Dev-only: nothing in the application imports it. ``bench/`` uses it instead of importing ``tests/``.
"""
