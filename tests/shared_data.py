"""Locations of the real recorded Binance samples in ../shared/data/binance (never copied here)."""

from pathlib import Path

import pandas as pd
import pytest

BINANCE_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binance"
TICKS_NDJSON = BINANCE_DATA / "ticks_2025-12-15T08-50-11.076Z.ndjson"
CRYPTOFEED_FRAMES = BINANCE_DATA / "cryptofeed_BINANCE.ws.1.0.txt"
ETH_KLINES_ZIP = BINANCE_DATA / "ETHUSDT-1m-2022-08-14.zip"
BTC_KLINES_ZIP = BINANCE_DATA / "BTCUSDT-1m-2022-09-05.zip"


def require(path: Path) -> Path:
    """Skip the calling test, naming the file, when the shared sample is absent."""
    if not path.exists():
        pytest.skip(f"shared sample {path} is not present (expected ../shared beside the repo)")
    return path


def kline_frame(path: Path) -> pd.DataFrame:
    """The OHLC columns (float) of a data.binance.vision kline zip, indexed by open time (ms).

    Some of these files start with a header row and some do not, so the header is dropped by value.
    """
    names = ["open_time", "open", "high", "low", "close"]
    frame = pd.read_csv(require(path), header=None, usecols=range(5), names=names, dtype=str)
    frame = frame[frame["open_time"] != "open_time"]
    return frame.astype(float).astype({"open_time": "int64"}).set_index("open_time")
