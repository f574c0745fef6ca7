"""The annotation server's JSON API from Python: what scripts and simulated people use.

    client = PreferenceClient("http://127.0.0.1:8000", token)
    while (query := client.next_query()) is not None:
        client.answer(query["id"], "A", response_ms=900)
"""

from __future__ import annotations

import time

import httpx

from robalign.errors import RobalignError
from robalign.types import Trajectory


class ServerError(RobalignError):
    """The server answered with an error status; `status` holds it."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"server said {status}: {message}")


class PreferenceClient:
    """A client for one annotator. Answers are idempotent, so `answer` retries on network
    errors (a restarted server, a dropped connection) for up to `retry_for` seconds."""

    def __init__(self, base_url: str, token: str, timeout: float = 10.0, retry_for: float = 30.0):
        self.base_url, self.retry_for = base_url.rstrip("/"), retry_for
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PreferenceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            if response.status_code >= 400:
                try:
                    message = response.json().get("error", response.text)
                except ValueError:
                    message = response.text
                raise ServerError(response.status_code, message)
            return response

    def next_query(self) -> dict | None:
        """The next query for this annotator, or None when none is left."""
        return self._request("GET", "/api/next").json()["query"]

    def progress(self) -> dict:
        return self._request("GET", "/api/progress").json()

    def answer(self, query_id: str, choice: str, ranking: list[int] | None = None,
               response_ms: float | None = None) -> dict:
        """Post an answer; returns the server's reply ({"created": bool, ...})."""
        body = {"query_id": query_id, "choice": choice, "ranking": ranking, "response_ms": response_ms}
        return self._request("POST", "/api/answers", json={k: v for k, v in body.items() if v is not None}).json()

    def trajectory(self, trajectory_id: str) -> Trajectory:
        """A trajectory's arrays (state, action, privileged info) as a Trajectory, without frames."""
        from robalign.preferences.store import unpack_arrays

        return unpack_arrays(self._request("GET", f"/api/trajectories/{trajectory_id}/arrays").content)
