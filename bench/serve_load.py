"""Load test of ``tuneforge serve``: N concurrent clients against each batching mode, in one run.

Serves a model on 127.0.0.1 (the tiny random model, built into a temp dir, unless
``--model`` is given), sends ``--requests`` chat requests from ``--clients``
threads with a fixed ``max_tokens`` and greedy decoding, and prints requests/s,
generated tokens/s, p50/p99 latency and errors for each mode of ``--modes``:
``continuous`` (requests join the running batch at the next token), ``static``
(the previous engine: one ``generate`` per batch, later requests wait) and
``off`` (one request at a time), then each mode's ratios to the first static
(or last) mode. The modes run back to back so the machine's load is comparable.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/serve_load.py
    HF_HUB_OFFLINE=1 .venv/bin/python bench/serve_load.py --model smollm2-135m-instruct --clients 8 --requests 32 --max-tokens 32
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
    parser.add_argument("--modes", default="continuous,static", help="Comma-separated: continuous, static, off.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Per-request timeout, seconds.")
    args = parser.parse_args(argv)
    size = args.max_batch_size or args.clients
    configs = {
        "continuous": BatchingConfig(size, args.window_ms, continuous=True),
        "static": BatchingConfig(size, args.window_ms, continuous=False),
        "off": BatchingConfig(1, 0.0, continuous=False),
    }
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in configs]
    if unknown or not modes:
        parser.error(f"--modes: unknown {unknown}; choose from {', '.join(configs)}")

    with tempfile.TemporaryDirectory() as tmp:
        target = args.model
        if target is None:
            from tuneforge.models import save_tiny_model

            target = str(save_tiny_model(tmp))
        rows = {}
        for mode in modes:
            engine = load_engine(target, name="bench", batching=configs[mode])
            app = create_app(engine, keys=None, limits=ServeLimits(max_tokens=max(args.max_tokens, 1)))
            with background_server(app) as url:
                # Warm-up, not counted: a full batch, since on a CPU the first forward passes of each new
                # shape are several times slower, which would otherwise fall on whichever mode runs first.
                run_load(url, "bench", args.clients, args.clients, args.max_tokens, args.timeout)
                outcomes, wall = run_load(url, "bench", args.clients, args.requests, args.max_tokens, args.timeout)
            rows[mode] = {**summarise(outcomes, wall), "max batch": engine.batcher.stats["max_batch_rows"],
                          "joined": engine.batcher.stats.get("joined_rows", 0)}
            engine.close()
            del engine, app

    print(f"\nmodel={args.model or 'tiny-random'} clients={args.clients} requests={args.requests} "
          f"max_tokens={args.max_tokens} max_batch_size={size}\n")
    cols = ["req/s", "tok/s", "p50 s", "p99 s", "errors", "max batch", "joined"]
    print("| mode | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |")
    base_mode = "static" if "static" in rows else modes[-1]
    base = rows[base_mode]
    print(f"\n| mode / {base_mode} | req/s | tok/s | p50 latency | p99 latency |")
    print("|---|---|---|---|---|")
    for label, row in rows.items():
        print(f"| {label} | x{row['req/s'] / base['req/s']:.2f} | x{row['tok/s'] / base['tok/s']:.2f} "
              f"| x{row['p50 s'] / base['p50 s']:.2f} | x{row['p99 s'] / base['p99 s']:.2f} |")
    return 0 if all(row["errors"] == 0 for row in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
