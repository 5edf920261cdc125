"""CSV upload cost: wall time and peak memory of ``parse_ohlc_csv`` on a bad file, a big valid file and a real one.

Each case runs in a fresh Python process, so peak RSS (``ru_maxrss`` of that child, read with
``os.wait4``) is the peak of that one parse. Cases:

* ``bad 20 MB``: a valid header, then ``,,,,,`` rows up to the 20 MiB upload limit: must be
  refused at line 2 without reading the rest.
* ``1 M valid rows``: 1,000,000 tiny distinct rows (``100000000,1,1,1,1,0``, epoch seconds), 20 MB.
* ``ETH zip``: the real Binance archive ``../shared/data/binance/ETHUSDT-1m-2022-08-14.zip``.

The baseline is a child that only imports the module (interpreter + numpy + pandas); "over" is
a case's peak minus that, so it includes the uploaded bytes themselves, and is compared with the
size of the CSV text (uncompressed for the zip). Wall time covers ``parse_ohlc_csv`` only and is
the best of ``--repeats`` runs; peak RSS is the largest, the baseline the smallest.

    .venv/bin/python bench/csv_upload.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ETH_ZIP = ROOT.parent / "shared" / "data" / "binance" / "ETHUSDT-1m-2022-08-14.zip"
HEADER = b"timestamp,open,high,low,close,volume\n"
LIMIT = 20 * 2**20


def write_inputs(folder: Path) -> dict[str, tuple[Path, int]]:
    """Case name -> (file to upload, size in bytes of the CSV text it holds)."""
    bad = folder / "bad.csv"
    bad.write_bytes(HEADER + b",,,,,\n" * ((LIMIT - len(HEADER)) // 6))
    valid = folder / "valid.csv"
    with valid.open("wb") as out:
        out.write(HEADER)
        for start in range(0, 1_000_000, 100_000):
            out.write(b"".join(b"%d,1,1,1,1,0\n" % (100_000_000 + i) for i in range(start, start + 100_000)))
    cases = {"bad 20 MB": (bad, bad.stat().st_size), "1 M valid rows": (valid, valid.stat().st_size)}
    if ETH_ZIP.exists():
        with zipfile.ZipFile(ETH_ZIP) as archive:
            cases["ETH zip"] = (ETH_ZIP, sum(info.file_size for info in archive.infolist()))
    return cases


def child(path: str) -> None:
    """Runs in the fresh process: import, then (unless ``path`` is empty) read and parse; print one JSON line."""
    sys.path.insert(0, str(ROOT))
    from storage.csv_import import CsvImportError, parse_ohlc_csv

    if not path:
        print(json.dumps({"outcome": "baseline"}))
        return
    data = Path(path).read_bytes()
    start = time.perf_counter()
    try:
        outcome = f"{len(parse_ohlc_csv(data, Path(path).name)):,} bars"
    except CsvImportError as exc:
        outcome = f"refused: {str(exc)[:60]}"
    print(json.dumps({"seconds": time.perf_counter() - start, "outcome": outcome}))


def run_child(path: Path | None) -> tuple[dict, int]:
    """The child's JSON report and its peak RSS in bytes (Linux reports ru_maxrss in KiB); no path: baseline."""
    args = [sys.executable, __file__, "--child", str(path or "")]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=ROOT)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"child for {path} failed with exit code {process.returncode}")
    return json.loads(output), usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    mb = 2**20
    with tempfile.TemporaryDirectory() as folder:
        cases = write_inputs(Path(folder))
        baseline = min(run_child(None)[1] for _ in range(args.repeats))
        print(f"module: {ROOT / 'storage' / 'csv_import.py'}; baseline (imports only): {baseline / mb:.0f} MB")
        print(f"{'case':<16}{'CSV MB':>8}{'wall s':>9}{'peak MB':>9}{'over MB':>9}{'over/size':>10}  outcome")
        for name, (path, size) in cases.items():
            runs = [run_child(path) for _ in range(args.repeats)]
            seconds = min(report["seconds"] for report, _ in runs)
            peak = max(rss for _, rss in runs)
            over = peak - baseline
            print(f"{name:<16}{size / mb:>8.2f}{seconds:>9.3f}{peak / mb:>9.0f}{over / mb:>9.0f}"
                  f"{over / size:>9.1f}x  {runs[0][0]['outcome']}")


if __name__ == "__main__":
    main()
