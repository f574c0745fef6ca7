"""Sustained answers/s and p50/p99 latency of the annotation server on loopback.

    .venv/bin/python benchmarks/prefs_server.py [--clients 8 --answers 300]

Starts `robalign prefs serve` as its own process (uvicorn, one worker, SQLite WAL with
synchronous=FULL: every 2xx is on disk), then `--clients` threads each post `--answers`
answers as fast as the server takes them, and a second round re-posts them all (the
idempotent path a retrying client takes). Client and server share this machine's cores,
so the figures are a floor for a real deployment where browsers run elsewhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import serve_in_subprocess, synthetic_trajectory  # noqa: E402

from robalign.preferences import PreferenceStore  # noqa: E402
from robalign.preferences.simulate import free_port  # noqa: E402


def run_round(port: int, tokens: list[str], queries: list[str], answers: int) -> tuple[float, np.ndarray, dict]:
    latencies: list[list[float]] = [[] for _ in tokens]
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {tokens[c]}"}) as http:
            for q in range(answers):
                started = time.perf_counter()
                r = http.post("/api/answers", json={"query_id": queries[q], "choice": "AB"[(c + q) % 2]})
                latencies[c].append(time.perf_counter() - started)
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(len(tokens))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, np.concatenate(latencies) * 1e3, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--answers", type=int, default=300, help="answers per client")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = PreferenceStore(Path(tmp) / "store")
        ids = [store.add_trajectory(synthetic_trajectory(i, frames=False)) for i in range(30)]
        queries = store.add_queries([(ids[i % 30], ids[(i + 1 + i // 30) % 30]) for i in range(args.answers)])
        tokens = [store.add_annotator(f"bench-{c}")[1] for c in range(args.clients)]
        store.close()
        port = free_port()
        server = serve_in_subprocess(f"{tmp}/store", port)
        try:
            print(f"{args.clients} clients x {args.answers} answers, loopback, {os.cpu_count()} cores shared by "
                  f"clients and server")
            print(f"{'round':<22} {'answers/s':>10} {'p50 ms':>8} {'p99 ms':>8}  statuses")
            for name in ("new answers (201)", "repeats (200)"):
                seconds, lat, statuses = run_round(port, tokens, queries, args.answers)
                print(f"{name:<22} {len(lat) / seconds:>10.0f} {np.percentile(lat, 50):>8.1f} "
                      f"{np.percentile(lat, 99):>8.1f}  {statuses}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
