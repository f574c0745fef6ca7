"""Load and faults: 8 clients x 200 answers, the server SIGKILLed mid-run and restarted.

Every answer that got a 2xx must be in the store exactly once afterwards. Clients retry
on connection errors with the same answer, which is safe because answers are idempotent
per (annotator, query).
"""

import signal
import sqlite3
import threading
import time

import httpx
import pytest

from conftest import serve_in_subprocess
from robalign.preferences import PreferenceStore
from robalign.preferences.simulate import free_port

pytestmark = pytest.mark.slow
CLIENTS, ANSWERS_EACH = 8, 200


def choice_for(client: int, query: int) -> str:
    return ("A", "B", "tie")[(client * 7 + query) % 3]


def test_every_acknowledged_answer_survives_a_sigkill_exactly_once(tmp_path, make_trajectory):
    store = PreferenceStore(tmp_path / "store")
    ids = [store.add_trajectory(make_trajectory(i, frames=False)) for i in range(21)]
    queries = store.add_queries([(ids[i % 21], ids[(i + 1 + i // 21) % 21]) for i in range(ANSWERS_EACH)])
    tokens = [store.add_annotator(f"client-{c}")[1] for c in range(CLIENTS)]
    annotators = {a["name"]: a["id"] for a in store.annotators()}
    store.close()

    port = free_port()
    server = serve_in_subprocess(tmp_path / "store", port)
    acknowledged: list[set[int]] = [set() for _ in range(CLIENTS)]
    statuses: dict[int, int] = {}
    transport_errors = [0]
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                          headers={"Authorization": f"Bearer {tokens[c]}"}) as http:
            for q in range(ANSWERS_EACH):
                body = {"query_id": queries[q], "choice": choice_for(c, q), "response_ms": q}
                deadline = time.monotonic() + 90
                while True:
                    try:
                        response = http.post("/api/answers", json=body)
                        break
                    except httpx.TransportError:  # server down: retry the same answer
                        with lock:
                            transport_errors[0] += 1
                        assert time.monotonic() < deadline, "server never came back"
                        time.sleep(0.05)
                with lock:
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if 200 <= response.status_code < 300:
                    acknowledged[c].add(q)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        while sum(map(len, acknowledged)) < CLIENTS * ANSWERS_EACH // 3:  # a third of the way in
            time.sleep(0.005)
        at_kill = sum(map(len, acknowledged))
        server.send_signal(signal.SIGKILL)
        server.wait()
        time.sleep(0.3)
        server = serve_in_subprocess(tmp_path / "store", port)
        for t in threads:
            t.join(timeout=180)
        assert not any(t.is_alive() for t in threads)
    finally:
        server.kill()
        server.wait()

    assert at_kill < CLIENTS * ANSWERS_EACH, "the kill must happen mid-run"
    assert transport_errors[0] > 0, "some requests must have hit the dead server"
    assert set(statuses) <= {200, 201}, statuses
    with sqlite3.connect(tmp_path / "store" / "store.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT annotator_id, query_id, choice, COUNT(*) FROM answers "
                          "GROUP BY annotator_id, query_id").fetchall()
    stored = {(a, q): (choice, n) for a, q, choice, n in rows}
    assert all(n == 1 for _, n in stored.values()), "an answer was stored twice"
    for c in range(CLIENTS):
        assert len(acknowledged[c]) == ANSWERS_EACH
        for q in acknowledged[c]:
            assert stored[(annotators[f"client-{c}"], queries[q])] == (choice_for(c, q), 1)
    assert len(stored) == CLIENTS * ANSWERS_EACH
