"""Simulated people answering through the annotation server, exactly as people do.

`simulate_annotator` registers a simulated annotator, then loops over the HTTP API:
fetch the next query, fetch its trajectories' arrays, let a `SimulatedAnnotator` choose,
post the answer. Benchmarks and the default pipeline thereby exercise the same server,
validation and store code a person's browser does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

from tqdm import tqdm

from robalign.annotators import SimulatedAnnotator
from robalign.preferences.client import PreferenceClient
from robalign.preferences.store import PreferenceStore


def simulate_annotator(client: PreferenceClient, annotator: SimulatedAnnotator, n: int | None = None,
                       progress: bool = False) -> dict[str, int]:
    """Answer up to `n` queries (None: until none is left); returns counts per choice."""
    counts: dict[str, int] = {}
    cache: dict[str, object] = {}
    bar = tqdm(total=n, desc="answering", unit="query", disable=not progress)
    while n is None or sum(counts.values()) < n:
        query = client.next_query()
        if query is None:
            break
        trajs = []
        for t in query["trajectories"]:
            if t["id"] not in cache:
                cache[t["id"]] = client.trajectory(t["id"])
            trajs.append(cache[t["id"]])
        started = time.perf_counter()
        if query["kind"] == "pair":
            choice, ranking = annotator.compare(*trajs), None
        else:
            choice, ranking = "rank", annotator.rank(trajs)
        client.answer(query["id"], choice, ranking, response_ms=(time.perf_counter() - started) * 1e3)
        counts[choice] = counts.get(choice, 0) + 1
        bar.update(1)
    bar.close()
    return counts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(store: PreferenceStore, answers_per_query: int = 1, port: int | None = None) -> Iterator[str]:
    """Serve `store` on 127.0.0.1 in a background thread; yields the base URL."""
    import uvicorn

    from robalign.preferences.server import create_app

    port = port or free_port()
    config = uvicorn.Config(create_app(store, answers_per_query), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the annotation server did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
