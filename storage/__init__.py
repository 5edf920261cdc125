"""Persistence: the :class:`~storage.base.TickStore` protocol and its SQLite implementation."""
