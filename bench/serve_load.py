"""Load test of ``tuneforge serve``: N concurrent clients, with dynamic batching on and off.

Serves a model on 127.0.0.1 (the tiny random model, built into a temp dir, unless
``--model`` is given), sends ``--requests`` chat requests from ``--clients``
threads with a fixed ``max_tokens`` and greedy decoding, and prints requests/s,
generated tokens/s, p50/p99 latency and errors for (a) dynamic batching and
(b) batching off (max batch size 1), plus the ratio a/b.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/serve_load.py
    HF_HUB_OFFLINE=1 .venv/bin/python bench/serve_load.py --model smollm2-135m-instruct --clients 4 --requests 16 --max-tokens 32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass

import httpx

from tuneforge.serve import BatchingConfig, ServeLimits, background_server, create_app, load_engine

QUESTIONS = [
    "What is the capital of France?", "Name three primary colours.", "How many legs does a spider have?",
    "Give me a synonym for happy.", "What is 12 times 12?", "Why is the sky blue?",
    "Write a haiku about rain.", "What does a refund policy cover?",
]


@dataclass
class Outcome:
    latency_s: float
    tokens: int
    ok: bool


def run_load(url: str, model: str, clients: int, requests: int, max_tokens: int, timeout_s: float) -> tuple[list[Outcome], float]:
    """Send ``requests`` chat requests from ``clients`` threads; return the outcomes and the wall time."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    next_index = iter(range(requests))

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=timeout_s) as http:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                body = {"model": model, "max_tokens": max_tokens, "temperature": 0,
                        "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
                start = time.perf_counter()
                try:
                    resp = http.post("/v1/chat/completions", json=body)
                    ok = resp.status_code == 200
                    tokens = resp.json()["usage"]["completion_tokens"] if ok else 0
                except httpx.HTTPError:
                    ok, tokens = False, 0
                with lock:
                    outcomes.append(Outcome(time.perf_counter() - start, tokens, ok))

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes, time.perf_counter() - start


def summarise(outcomes: list[Outcome], wall_s: float) -> dict[str, float]:
    latencies = sorted(o.latency_s for o in outcomes if o.ok) or [float("nan")]
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return {
        "req/s": sum(o.ok for o in outcomes) / wall_s,
        "tok/s": sum(o.tokens for o in outcomes) / wall_s,
        "p50 s": statistics.median(latencies),
        "p99 s": p99,
        "errors": sum(not o.ok for o in outcomes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model to serve (default: a tiny random model).")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent clients.")
    parser.add_argument("--requests", type=int, default=64, help="Requests in all, per mode.")
    parser.add_argument("--max-tokens", type=int, default=32, help="max_tokens of every request.")
    parser.add_argument("--max-batch-size", type=int, default=None, help="Batched mode's limit (default: --clients).")
    parser.add_argument("--window-ms", type=float, default=10.0, help="Batching window.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Per-request timeout, seconds.")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        target = args.model
        if target is None:
            from tuneforge.models import save_tiny_model

            target = str(save_tiny_model(tmp))
        modes = {
            "a) batching on": BatchingConfig(args.max_batch_size or args.clients, args.window_ms),
            "b) batching off": BatchingConfig(1, 0.0),
        }
        rows = {}
        for label, batching in modes.items():
            engine = load_engine(target, name="bench", batching=batching)
            app = create_app(engine, keys=None, limits=ServeLimits(max_tokens=max(args.max_tokens, 1)))
            with background_server(app) as url:
                run_load(url, "bench", 1, 1, args.max_tokens, args.timeout)  # warm-up, not counted
                outcomes, wall = run_load(url, "bench", args.clients, args.requests, args.max_tokens, args.timeout)
            rows[label] = {**summarise(outcomes, wall), "max batch": engine.batcher.stats["max_batch_rows"] if batching.max_batch_size > 1 else 1}
            engine.close()
            del engine, app

    print(f"\nmodel={args.model or 'tiny-random'} clients={args.clients} requests={args.requests} max_tokens={args.max_tokens}\n")
    cols = ["req/s", "tok/s", "p50 s", "p99 s", "errors", "max batch"]
    print("| mode | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |")
    a, b = rows["a) batching on"], rows["b) batching off"]
    print(f"\nratio a/b: req/s x{a['req/s'] / b['req/s']:.2f}, tok/s x{a['tok/s'] / b['tok/s']:.2f}, "
          f"p50 latency x{a['p50 s'] / b['p50 s']:.2f}")
    return 0 if a["errors"] == b["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
