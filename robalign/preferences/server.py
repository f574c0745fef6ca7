"""The annotation server: a web page where people compare rollouts, and its JSON API.

    GET  /                          the comparison page (open it as /?token=TOKEN)
    GET  /api/next                  the next query for this annotator, with video URLs, and progress
    POST /api/answers               {"query_id", "choice": A|B|tie|skip|rank, "ranking"?, "response_ms"?}
    GET  /api/progress              answered / remaining / total for this annotator
    GET  /api/queries/{id}          one query
    GET  /api/trajectories/{id}     one trajectory's description
    GET  /api/trajectories/{id}/arrays   its state, actions and privileged info (safetensors bytes)
    GET  /videos/{sha256}.mp4       a content-addressed video
    GET  /openapi.json              the schema of all of the above

Every route but `/` and `/api/health` needs the annotator's token, as
`Authorization: Bearer TOKEN` or (for <video> tags, which cannot send headers) `?token=`.
Errors are JSON `{"error": "what was wrong and what is allowed"}` with a 4xx status, and
nothing reaches the database unless the whole request is valid.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from robalign.errors import RobalignError
from robalign.preferences.blobs import BadBlobName
from robalign.preferences.store import AnswerConflictError, PreferenceStore, UnknownIdError, hash_token

MAX_BODY_BYTES = 16 * 1024  # an answer is ~150 bytes; anything near this is abuse or a bug


class AnswerIn(BaseModel):
    """One answer. Pairs: choice A, B, tie or skip. Triplets: rank (with ranking) or skip."""

    model_config = ConfigDict(extra="forbid")
    query_id: str = Field(min_length=1, max_length=64)
    choice: Literal["A", "B", "tie", "skip", "rank"]
    ranking: list[int] | None = Field(default=None, min_length=3, max_length=3,
                                      description="triplets only: indices 0-2, most preferred first")
    response_ms: float | None = Field(default=None, ge=0, lt=1e8, description="time the person took, ms")


def create_app(store: PreferenceStore, answers_per_query: int = 1, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app over `store`. `answers_per_query`: how many people should answer each query."""
    if not isinstance(answers_per_query, int) or answers_per_query < 1:
        raise RobalignError(f"answers_per_query must be an int >= 1; got {answers_per_query!r}")
    app = FastAPI(title="robalign preferences", version="1",
                  description="Compare robot rollouts; answers go to the robalign preference store.")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    known_tokens: dict[str, dict] = {}  # token sha -> annotator; annotators are never deleted

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException):
        return JSONResponse({"error": err.detail}, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, err: RequestValidationError):
        errors = err.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"error": "malformed JSON body: " + errors[0].get("ctx", {}).get("error", "cannot parse")},
                                status_code=400)
        raw = errors[0].get("input") if len(errors) == 1 and tuple(errors[0].get("loc", ())) == ("body",) else None
        if isinstance(raw, (bytes, str)):  # a body sent without Content-Type: application/json
            try:
                json.loads(raw)
            except ValueError as bad:
                return JSONResponse({"error": f"malformed JSON body: {bad}"}, status_code=400)
            return JSONResponse({"error": "send the body as JSON with `Content-Type: application/json`"},
                                status_code=415)
        parts = []
        for e in errors:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {e.get('msg')}")
        return JSONResponse({"error": "; ".join(parts), "details": json.loads(json.dumps(errors, default=str))},
                            status_code=422)

    def annotator(request: Request) -> dict:
        token = _token(request)
        if not token:
            raise HTTPException(401, "missing token: send `Authorization: Bearer TOKEN` (or ?token=TOKEN for videos)",
                                headers={"WWW-Authenticate": "Bearer"})
        sha = hash_token(token)
        if sha not in known_tokens:
            found = store.annotator_for_token(token)
            if found is None:
                raise HTTPException(401, "unknown token; ask for one with `robalign prefs annotator name=NAME`",
                                    headers={"WWW-Authenticate": "Bearer"})
            known_tokens[sha] = found
        return known_tokens[sha]

    def describe(trajectory_id: str, token_param: str) -> dict:
        t = store.trajectory_info(trajectory_id)
        # what a person sees: no mode, success or provenance, which would bias the answer
        return {"id": t["id"], "instruction": t["instruction"], "length": t["length"],
                "video_url": f"/videos/{t['video_sha']}.mp4{token_param}" if t["video_sha"] else None}

    def with_trajectories(query: dict, token: str) -> dict:
        return {**query, "trajectories": [describe(t, token) for t in query["trajectories"]]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("robalign.preferences").joinpath("static/index.html").read_text()

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in ("app.js", "app.css"):
            raise HTTPException(404, f"no static file {name[:40]!r}")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(resources.files("robalign.preferences").joinpath(f"static/{name}").read_text(), media_type=media)

    @app.get("/api/health")
    def health() -> dict:
        return {"ok": True, "schema_version": store.schema_version}

    @app.get("/api/me")
    def me(who: dict = Depends(annotator)) -> dict:
        return who

    @app.get("/api/next")
    def next_query(request: Request, who: dict = Depends(annotator)) -> dict:
        """The next query for this annotator (null when none is left) and their progress."""
        query = store.next_query(who["id"], answers_per_query)
        return {"query": None if query is None else with_trajectories(query, f"?token={_token(request)}"),
                "progress": store.progress(who["id"], answers_per_query)}

    @app.get("/api/progress")
    def progress(who: dict = Depends(annotator)) -> dict:
        return store.progress(who["id"], answers_per_query)

    @app.post("/api/answers", status_code=201)
    def post_answer(answer: AnswerIn, response: Response, who: dict = Depends(annotator)) -> dict:
        """Store an answer. 201: stored; 200: the same answer was already stored (safe to retry);
        409: this annotator already answered the query differently."""
        try:
            stored, created = store.record_answer(answer.query_id, who["id"], answer.choice, answer.ranking,
                                                  answer.response_ms)
        except UnknownIdError as err:
            raise HTTPException(404, str(err)) from None
        except AnswerConflictError as err:
            raise HTTPException(409, str(err)) from None
        except RobalignError as err:
            raise HTTPException(422, str(err)) from None
        if not created:
            response.status_code = 200
        return {"created": created, "query_id": stored.query_id, "choice": stored.choice,
                "ranking": list(stored.ranking) if stored.ranking else None}

    @app.get("/api/queries/{query_id}")
    def get_query(query_id: str, request: Request, who: dict = Depends(annotator)) -> dict:
        try:
            return with_trajectories(store.query(query_id), "")
        except UnknownIdError as err:
            raise HTTPException(404, str(err)) from None

    @app.get("/api/trajectories/{trajectory_id}")
    def get_trajectory(trajectory_id: str, who: dict = Depends(annotator)) -> dict:
        try:
            return describe(trajectory_id, "")
        except UnknownIdError as err:
            raise HTTPException(404, str(err)) from None

    @app.get("/api/trajectories/{trajectory_id}/arrays")
    def get_arrays(trajectory_id: str, who: dict = Depends(annotator)) -> Response:
        """State, actions and privileged info as safetensors (what a simulated person reads)."""
        try:
            store.trajectory_info(trajectory_id)
            return Response(store.blobs.get("arrays", trajectory_id), media_type="application/octet-stream")
        except (UnknownIdError, BadBlobName) as err:
            raise HTTPException(404, str(err)) from None

    @app.get("/videos/{name:path}")
    def video(name: str, who: dict = Depends(annotator)):
        sha, dot, ext = name.partition(".")
        try:
            if dot != "." or ext != "mp4":
                raise BadBlobName(f"video names are <sha256>.mp4; got {name[:80]!r}")
            path = store.blobs.path("video", sha)
        except BadBlobName as err:
            raise HTTPException(400, str(err)) from None
        if not path.is_file():
            raise HTTPException(404, f"no video {name}")
        return FileResponse(path, media_type="video/mp4")

    return app


def _token(request: Request) -> str | None:
    """The annotator token: `Authorization: Bearer TOKEN`, else `?token=` (for <video> tags)."""
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else request.query_params.get("token")


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with 413 before any handler runs.

    Checks Content-Length up front and counts streamed (chunked) bodies as they arrive.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # an HTTPException passes FastAPI's body parsing untouched
                    raise StarletteHTTPException(413, f"request body too large; at most {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)

    async def _refuse(self, send):
        body = json.dumps({"error": f"request body too large; at most {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def serve(store: PreferenceStore, host: str = "127.0.0.1", port: int = 8000, answers_per_query: int = 1) -> None:
    """Run the server in this process until interrupted."""
    import uvicorn

    uvicorn.run(create_app(store, answers_per_query), host=host, port=port, log_level="warning")
