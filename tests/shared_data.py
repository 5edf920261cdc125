"""Locations of the real recorded Binance samples in ../shared/data/binance (never copied here)."""

from pathlib import Path

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
