"""CSV text a spreadsheet will not execute: formula neutralisation and the one CSV writer.

A CSV opened in Excel or LibreOffice evaluates a text cell that starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return as a formula (CSV injection). Such text cells get a leading
apostrophe; numeric columns are left as numbers, so ``-0.5`` stays a number.

Pure text handling in the bottom layer, so every writer of CSV (the dashboard's downloads in
``ui/``, the scanner's command line in ``cli/``) shares it without importing upward.
"""

from __future__ import annotations

import pandas as pd

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise_text(value: object) -> object:
    """Prefix a formula-looking string with an apostrophe; anything else unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def to_csv_bytes(frame: pd.DataFrame, *, index_label: str = "time_utc") -> bytes:
    """UTF-8 CSV of ``frame``; text cells (and a text index) neutralised, times in ISO-8601 UTC."""
    out = frame.copy()
    for column in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[column]) or pd.api.types.is_bool_dtype(out[column])):
            out[column] = out[column].map(neutralise_text)
    if isinstance(out.index, pd.DatetimeIndex):
        out.index = out.index.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ").str.replace(
            r"\.(\d{3})\d{3}Z$", r".\1Z", regex=True)
    else:
        out.index = out.index.map(neutralise_text)
    out.columns = [neutralise_text(str(c)) for c in out.columns]
    # CRLF (RFC 4180) also makes the csv writer quote cells containing a bare CR.
    return out.to_csv(index_label=index_label, lineterminator="\r\n").encode("utf-8")
