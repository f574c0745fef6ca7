"""The annotation server over real HTTP on loopback: the API, and bad input that never lands."""

import httpx
import pytest

from robalign.preferences import PreferenceStore
from robalign.preferences.client import PreferenceClient, ServerError
from robalign.preferences.simulate import running_server


@pytest.fixture
def served(tmp_path, make_trajectory):
    store = PreferenceStore(tmp_path / "store")
    ids = [store.add_trajectory(make_trajectory(i)) for i in range(4)]
    queries = store.add_queries([ids[:2], ids[1:4]])
    annotator, token = store.add_annotator("alice")
    with running_server(store) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        yield store, http, queries, ids, token
    store.close()


def test_next_answer_progress_and_videos(served):
    store, http, (pair, triplet), ids, token = served
    body = http.get("/api/next").json()
    assert body["progress"] == {"answered": 0, "remaining": 2, "total": 2}
    query = body["query"]
    assert query["id"] == pair and query["kind"] == "pair"
    assert [t["id"] for t in query["trajectories"]] == ids[:2]
    assert "mode" not in query["trajectories"][0] and "success" not in query["trajectories"][0]  # no bias
    video = httpx.get(http.base_url.join(query["trajectories"][0]["video_url"]))  # token in the URL, no header
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content == store.blobs.path("video", store.trajectory_info(ids[0])["video_sha"]).read_bytes()

    assert http.post("/api/answers", json={"query_id": pair, "choice": "B", "response_ms": 5}).status_code == 201
    again = http.post("/api/answers", json={"query_id": pair, "choice": "B"})
    assert again.status_code == 200 and again.json()["created"] is False
    conflict = http.post("/api/answers", json={"query_id": pair, "choice": "A"})
    assert conflict.status_code == 409 and "already answered" in conflict.json()["error"]
    assert http.post("/api/answers", json={"query_id": triplet, "choice": "rank", "ranking": [1, 0, 2]}).status_code == 201
    assert http.get("/api/next").json() == {"query": None, "progress": {"answered": 2, "remaining": 0, "total": 2}}
    assert [(a.choice, a.ranking) for a in store.answers()] == [("B", None), ("rank", (1, 0, 2))]


def test_openapi_schema_lists_the_api(served):
    _, http, *_ = served
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/api/next", "/api/answers", "/api/progress", "/api/trajectories/{trajectory_id}/arrays"} <= set(paths)


def test_client_reads_trajectories_for_simulated_people(served, make_trajectory):
    store, http, _, ids, token = served
    with PreferenceClient(str(http.base_url), token) as client:
        traj = client.trajectory(ids[2])
        assert traj.info["score"][0] == 2 and traj.provenance["seed"] == 2
        with pytest.raises(ServerError, match="404"):
            client.trajectory("0" * 64)


BAD_REQUESTS = [
    # (description, method, path, kwargs, status, words in the error)
    ("malformed JSON", "POST", "/api/answers", {"content": b'{"query_id": "x", '}, 400, "malformed JSON"),
    ("malformed JSON, typed", "POST", "/api/answers",
     {"content": b'{"query_id": "x", ', "headers": {"Content-Type": "application/json"}}, 400, "malformed JSON"),
    ("JSON without its type", "POST", "/api/answers", {"content": b'{"query_id": "x"}'}, 415, "Content-Type"),
    ("not an object", "POST", "/api/answers", {"json": ["A"]}, 422, "valid dictionary"),
    ("missing field", "POST", "/api/answers", {"json": {"choice": "A"}}, 422, "query_id: Field required"),
    ("extra field", "POST", "/api/answers", {"json": {"query_id": "{pair}", "choice": "A", "sql": 1}}, 422, "sql: Extra inputs"),
    ("unknown query", "POST", "/api/answers", {"json": {"query_id": "0" * 32, "choice": "A"}}, 404, "unknown query id"),
    ("choice outside the set", "POST", "/api/answers", {"json": {"query_id": "{pair}", "choice": "C"}}, 422,
     "choice: Input should be 'A', 'B', 'tie', 'skip' or 'rank'"),
    ("rank on a pair", "POST", "/api/answers", {"json": {"query_id": "{pair}", "choice": "rank", "ranking": [0, 1, 2]}},
     422, "not allowed for a pair query"),
    ("bad ranking", "POST", "/api/answers", {"json": {"query_id": "{triplet}", "choice": "rank", "ranking": [0, 0, 1]}},
     422, "must order 0, 1 and 2"),
    ("negative response time", "POST", "/api/answers", {"json": {"query_id": "{pair}", "choice": "A", "response_ms": -1}},
     422, "response_ms"),
    ("oversized body", "POST", "/api/answers", {"content": b'{"query_id": "' + b"x" * 20000 + b'"}'}, 413, "too large"),
    ("oversized chunked body", "POST", "/api/answers", {"content": iter([b"x" * 10000] * 3)}, 413, "too large"),
    ("missing token", "GET", "/api/next", {"headers": {"Authorization": ""}}, 401, "missing token"),
    ("wrong token", "POST", "/api/answers", {"json": {"query_id": "{pair}", "choice": "A"},
                                             "headers": {"Authorization": "Bearer nope"}}, 401, "unknown token"),
    ("unknown trajectory", "GET", "/api/trajectories/" + "0" * 64, {}, 404, "unknown trajectory id"),
    ("video: not a sha", "GET", "/videos/abc.mp4", {}, 400, "sha256"),
    ("video: dot-dot", "GET", "/videos/..%2F..%2Fstore.sqlite", {}, 400, "sha256"),
    ("video: nested", "GET", "/videos/" + "a" * 64 + "%2F..%2F..%2Fstore.sqlite", {}, 400, "sha256"),
    ("video: wrong suffix", "GET", "/videos/" + "a" * 64 + ".sqlite", {}, 400, "<sha256>.mp4"),
    ("video: absent", "GET", "/videos/" + "a" * 64 + ".mp4", {}, 404, "no video"),
]


@pytest.mark.parametrize("what, method, path, kwargs, status, words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_that_says_why_and_stores_nothing(served, what, method, path, kwargs, status, words):
    store, http, (pair, triplet), *_ = served
    if "json" in kwargs and isinstance(kwargs["json"], dict):
        kwargs = {**kwargs, "json": {k: v.format(pair=pair, triplet=triplet) if isinstance(v, str) else v
                                     for k, v in kwargs["json"].items()}}
    response = http.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert store.answers() == []


def test_raw_dot_dot_paths_never_reach_the_filesystem(served):
    """httpx normalises `..` away; a raw socket sends the path exactly as an attacker would."""
    import socket

    store, http, *_ = served
    token = http.headers["Authorization"].split()[1]
    for target in ("/videos/../store.sqlite", "/videos/../../../etc/passwd", "/videos/%2e%2e/store.sqlite"):
        with socket.create_connection((http.base_url.host, http.base_url.port)) as sock:
            sock.sendall(f"GET {target}?token={token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        status = int(reply.split()[1])
        assert 400 <= status < 500, (target, reply[:200])
        assert b"SQLite format" not in reply and b"root:" not in reply
