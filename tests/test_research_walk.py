"""Walk-forward on the distributed runner (research/walkrun.py, research/results.py, ``python -m cli.research
walk``): equal to the single-process walk_forward exactly, progress and cancel as the scan, stored whole with
its parameters, bad requests named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from distributed import Client

from domain import Market, Timeframe
from research.cluster import open_client
from research.results import WALK_FILES, load_walk, save_walk
from research.scan import ScanCancelled, ScanSpec
from research.walkforward import WalkForwardSettings
from research.walkrun import walk_distributed, walk_in_process
from storage.errors import StorageError
from storage.research import ResearchStore
from testkit.research import universe_closes, write_universe
from testkit.waiting import eventually

MINUTE = Timeframe.of("1m")
JAN = 1_704_067_200_000  # 2024-01-01T00:00Z
START = JAN - 1_000 * 60_000  # 2023-12-31T07:20Z: the span crosses a month boundary
BARS = 2_400
SYMBOLS = tuple(f"S{i:02d}USDT" for i in range(7))
SETTINGS = WalkForwardSettings.of("1m", "600min", "200min", cost_bps=2.0)  # 9 windows over the span


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """7 symbols x 2,400 bars: one planted pair, one symbol listed late."""
    root = str(tmp_path_factory.mktemp("walk-store"))
    closes = universe_closes(SYMBOLS, BARS, seed=11, planted=[("S03USDT", "S00USDT")])
    write_universe(ResearchStore(root), Market.SPOT, MINUTE, SYMBOLS, START, closes, first_bar={"S05USDT": 700})
    return root


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with open_client(workers=2) as c:
        yield c


def spec_of(root: str, **changes: Any) -> ScanSpec:
    values: dict[str, Any] = {"store": root, "market": Market.SPOT, "timeframe": MINUTE, "symbols": SYMBOLS,
                              "start_ms": START, "end_ms": START + BARS * MINUTE.ms, "block_size": 2}
    return ScanSpec(**{**values, **changes})


def test_the_distributed_walk_forward_equals_the_single_process_one_exactly(client, store_root):
    reference = walk_in_process(spec_of(store_root), SETTINGS)
    reports: list[tuple[int, int]] = []
    outcome = walk_distributed(client, spec_of(store_root), SETTINGS,
                               progress=lambda done, total: reports.append((done, total)))
    assert len(outcome.windows) == 9 and len(outcome.rows) == 9 * 21
    pd.testing.assert_frame_equal(outcome.rows, reference.rows, check_exact=True)
    pd.testing.assert_frame_equal(outcome.summary, reference.summary, check_exact=True)
    # Another cut into blocks, symbols given unsorted: the same rows.
    shuffled = spec_of(store_root, block_size=3, symbols=tuple(reversed(SYMBOLS)))
    pd.testing.assert_frame_equal(walk_distributed(client, shuffled, SETTINGS).rows, reference.rows,
                                  check_exact=True)
    done = [d for d, _ in reports]
    assert done[0] == 0 and done == sorted(done) and done[-1] == 21 and {t for _, t in reports} == {21}
    planted = outcome.rows[(outcome.rows["y"] == "S00USDT") & (outcome.rows["x"] == "S03USDT")]
    # Found in every window; 200 trading bars of an AR(0.9) spread reject a unit root most of the time.
    assert (planted["q_value"] < 0.05).all() and planted["stays"].sum() >= 5


def test_interrupting_the_walk_cancels_every_future(client, store_root):
    def interrupt(done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(ScanCancelled, match=r"scan cancelled after \d+ of 21 pairs; nothing stored"):
        walk_distributed(client, spec_of(store_root, block_size=1), SETTINGS, progress=interrupt)
    eventually(lambda: not any(client.processing().values()), timeout=30, message="tasks still running")


def test_a_walk_is_stored_whole_and_read_back(store_root, tmp_path):
    outcome = walk_in_process(spec_of(store_root, symbols=SYMBOLS[:4]), SETTINGS)
    folder = save_walk(outcome.rows, outcome.summary, outcome.parameters(), tmp_path / "scans")
    assert folder.name.startswith("walk-") and sorted(p.name for p in folder.iterdir()) == sorted(WALK_FILES)
    assert [p.name for p in (tmp_path / "scans").iterdir()] == [folder.name]  # no temporary folder left
    rows, summary, parameters = load_walk(folder)
    pd.testing.assert_frame_equal(summary, outcome.summary)
    pd.testing.assert_frame_equal(rows, outcome.rows, check_dtype=False)
    assert parameters["kind"] == "walk" and parameters["formation"] == 600 and parameters["trading"] == 200
    assert parameters["formation_duration"] == "0 days 10:00:00" and parameters["cost_bps"] == 2.0
    assert parameters["symbols"] == list(SYMBOLS[:4]) and len(parameters["windows"]) == 9
    assert parameters["windows"][0] == {"window": 0, "formation_start": "2023-12-31T07:20Z",
                                        "trading_start": "2023-12-31T17:20Z", "trading_end": "2023-12-31T20:40Z"}
    (folder / "walk.json").write_text(json.dumps({"kind": "scan"}))
    with pytest.raises(StorageError, match="is not a walk-forward run's parameters"):
        load_walk(folder)
    with pytest.raises(StorageError, match="cannot read the walk-forward run"):
        load_walk(tmp_path / "nowhere")


def test_a_failed_write_leaves_nothing(store_root, tmp_path, monkeypatch):
    outcome = walk_in_process(spec_of(store_root, symbols=SYMBOLS[:3]), SETTINGS)
    with pytest.raises(TypeError):
        save_walk(outcome.rows, outcome.summary, {"not json": object()}, tmp_path)
    assert list(Path(tmp_path).iterdir()) == []
