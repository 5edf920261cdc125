"""The command lines: the recorder (``cli.record``), the scanners (``cli.scan``, ``cli.research``) and
the archive importer (``cli.archives``)."""

from __future__ import annotations

import pandas as pd


def utc_ms(raw: str) -> int | None:
    """An ISO-8601 time (naive means UTC) as UTC epoch ms, or None when ``raw`` is not one; each
    command names the option in its own message."""
    try:
        when = pd.Timestamp(raw.strip())
    except ValueError:
        return None
    if when is pd.NaT:
        return None
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    return int(when.value // 1_000_000)  # Timestamp.value is in ns whatever the unit
