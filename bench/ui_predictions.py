"""Page load time of the dashboard's predictions page for a run with 10,000 predictions.

Writes one run folder (``tests/ui/fake_runs.py``: the real eval serialisers) with
``--predictions`` rows, serves the dashboard on 127.0.0.1 with a real uvicorn server
and times complete HTTP GETs of: the first page cold (the file parsed), the first
page warm (parsed rows cached), the wrong→right filter, a full-text search, the last
page, and the run page. Cold loads bump the file's mtime first. The baseline is reading and parsing the same
``predictions.jsonl`` in-process with no HTTP at all (what any page over the whole file
must at least cost). Prints median and max of ``--repeat`` loads.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. .venv/bin/python bench/ui_predictions.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.ui.fake_runs, run from the repo root
from tests.ui.fake_runs import write_run  # noqa: E402
from tuneforge.serve import background_server  # noqa: E402
from tuneforge.ui import create_app  # noqa: E402


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        run = write_run(runs, "big", predictions=args.predictions, metrics_steps=500)
        path = run / "eval" / "predictions.jsonl"
        size_mb = path.stat().st_size / 1e6

        def baseline():
            with path.open(encoding="utf-8") as f:
                return [json.loads(line) for line in f]

        rows: list[tuple[str, list[float]]] = [("baseline: read + parse predictions.jsonl (no HTTP)", timed(baseline, args.repeat))]
        with background_server(create_app(runs, keys=None)) as url, httpx.Client(base_url=url, timeout=30) as client:
            def get(path_query: str):
                def load():
                    response = client.get(path_query)
                    response.raise_for_status()
                return load

            def cold():
                os.utime(path)  # a new mtime: the cache parses the file again, as after a new evaluation
                get("/runs/big/predictions")()

            rows.append(("predictions page 1, cold (file parsed)", timed(cold, max(3, args.repeat // 4))))
            for label, target in [
                ("predictions page 1, warm", "/runs/big/predictions"),
                ("filter wrong→right", "/runs/big/predictions?kind=wrong_to_right"),
                ("search 'order 1042'", "/runs/big/predictions?q=order+1042"),
                ("last page", f"/runs/big/predictions?page={args.predictions // 50}"),
                ("run page (eval table, data report)", "/runs/big"),
                ("runs list", "/"),
            ]:
                rows.append((label, timed(get(target), args.repeat)))
    print(f"{args.predictions} predictions ({size_mb:.1f} MB), {args.repeat} loads each, 50 rows a page")
    print(f"{'what':<55} {'median ms':>10} {'max ms':>10}")
    for label, times in rows:
        print(f"{label:<55} {statistics.median(times):>10.1f} {max(times):>10.1f}")


if __name__ == "__main__":
    main()
