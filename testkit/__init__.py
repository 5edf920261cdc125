"""Test kit shared by ``tests/`` and ``bench/``: fakes of Binance (WebSocket and REST), fake sources,
builders of records, and :func:`~testkit.waiting.eventually` (poll with a deadline).

Dev-only: nothing in the application imports it. ``bench/`` uses it instead of importing ``tests/``.
"""
