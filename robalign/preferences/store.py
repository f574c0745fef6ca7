"""PreferenceStore: trajectories, queries, annotators and answers that are never lost.

A store is a directory: `store.sqlite` (SQLite in WAL mode, synchronous=FULL, so an
answer that was committed survives a killed server or a power cut) and content-addressed
blobs (`video/` mp4s, `arrays/` safetensors of state, action and privileged info). Give
`url=` to keep the tables in PostgreSQL instead; the blobs stay in the directory.

    store = PreferenceStore("runs/prefs")           # created if absent
    tid = store.add_trajectory(trajectory)          # content-addressed: same trajectory, same id
    [qid] = store.add_queries([(tid_a, tid_b)], strategy="random")
    annotator_id, token = store.add_annotator("alice")
    store.record_answer(qid, annotator_id, "A", response_ms=1800)
    store.export_parquet("prefs-export/")           # tables as parquet + the blobs they use
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from sqlalchemy import Boolean, Float, Integer, create_engine, event, func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from robalign.errors import RobalignError
from robalign.preferences.blobs import BlobStore
from robalign.preferences.schema import (
    MIGRATIONS, PAIR_CHOICES, SCHEMA_VERSION, TRIPLET_CHOICES, AnnotatorRow, AnswerRow, Base,
    Meta, QueryRow, TrajectoryRow,
)
from robalign.types import Trajectory

DB_FILE = "store.sqlite"
ANNOTATOR_KINDS = ("human", "simulated")
TABLES = {"trajectories": TrajectoryRow, "annotators": AnnotatorRow, "queries": QueryRow, "answers": AnswerRow}


class UnknownIdError(RobalignError):
    """A query, trajectory or annotator id that is not in the store."""


class AnswerConflictError(RobalignError):
    """The annotator already answered this query differently (answers are never overwritten)."""


@dataclasses.dataclass(frozen=True)
class Answer:
    query_id: str
    annotator_id: str
    choice: str
    ranking: tuple[int, ...] | None
    response_ms: float | None
    created_at: float


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class PreferenceStore:
    """Open (or create) the store in directory `root`; `url` puts the tables elsewhere."""

    def __init__(self, root: str | Path, url: str | None = None, create: bool = True):
        self.root = Path(root)
        if not self.root.exists():
            if not create:
                raise RobalignError(f"no preference store at {str(self.root)!r} (the directory does not exist)")
            self.root.mkdir(parents=True)
        elif not self.root.is_dir():
            raise RobalignError(f"preference store path {str(self.root)!r} is a file; give a directory")
        self.blobs = BlobStore(self.root)
        self.url = url or f"sqlite:///{(self.root / DB_FILE).absolute()}"
        if url is None and not create and not (self.root / DB_FILE).exists():
            raise RobalignError(f"{str(self.root)!r} holds no {DB_FILE}; is it a preference store?")
        self.engine = _make_engine(self.url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._prepare_schema()

    # ---- schema ----------------------------------------------------------------------------
    def _prepare_schema(self) -> None:
        with self.engine.begin() as conn:
            if not inspect(conn).has_table("meta"):
                Base.metadata.create_all(conn)
                conn.execute(Meta.__table__.insert(), [
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "created_at", "value": str(time.time())},
                ])
                return
            version = int(conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar_one())
            if version > SCHEMA_VERSION:
                raise RobalignError(
                    f"the store at {self.url} has schema version {version}, newer than this robalign "
                    f"understands ({SCHEMA_VERSION}); upgrade robalign to open it"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):  # oldest first, in one transaction
                MIGRATIONS[step](conn)
            if version < SCHEMA_VERSION:
                conn.execute(Meta.__table__.update().where(Meta.key == "schema_version"), {"value": str(SCHEMA_VERSION)})

    @property
    def schema_version(self) -> int:
        with self._session() as s:
            return int(s.scalar(select(Meta.value).where(Meta.key == "schema_version")))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "PreferenceStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- trajectories ----------------------------------------------------------------------
    def add_trajectory(self, trajectory: Trajectory, fps: int = 20) -> str:
        """Register a trajectory (idempotent) and return its id, the sha256 of its arrays."""
        if not isinstance(trajectory, Trajectory):
            raise RobalignError(f"add_trajectory needs a robalign Trajectory; got {type(trajectory).__name__}")
        arrays = pack_arrays(trajectory)
        video = _encode_video(trajectory.frames, fps) if trajectory.frames is not None else None
        tid = self.blobs.put("arrays", arrays)
        video_sha = self.blobs.put("video", video) if video is not None else None
        row = TrajectoryRow(
            id=tid, env=trajectory.env_name, instruction=trajectory.instruction, success=bool(trajectory.success),
            length=len(trajectory), mode=trajectory.mode, video_sha=video_sha,
            provenance=json.dumps(trajectory.provenance, sort_keys=True, default=str), created_at=time.time(),
        )
        with self._session() as s:
            if s.get(TrajectoryRow, tid) is None:
                s.add(row)
                try:
                    s.commit()
                except IntegrityError:  # registered concurrently by another writer: same content
                    s.rollback()
        return tid

    def trajectory_info(self, trajectory_id: str) -> dict:
        """The trajectory's row as a dict (no arrays)."""
        with self._session() as s:
            row = s.get(TrajectoryRow, trajectory_id)
            if row is None:
                raise UnknownIdError(f"unknown trajectory id {str(trajectory_id)[:80]!r}")
            return _trajectory_dict(row)

    def trajectory_ids(self, env: str | None = None) -> list[str]:
        with self._session() as s:
            q = select(TrajectoryRow.id).order_by(TrajectoryRow.created_at, TrajectoryRow.id)
            if env is not None:
                q = q.where(TrajectoryRow.env == env)
            return list(s.scalars(q))

    def load_trajectory(self, trajectory_id: str, frames: bool = False) -> Trajectory:
        """The stored Trajectory; `frames=True` also decodes its video (T, H, W, 3) uint8."""
        info = self.trajectory_info(trajectory_id)
        traj = unpack_arrays(self.blobs.get("arrays", trajectory_id))
        if frames and info["video_sha"] is not None:
            traj.frames = _decode_video(self.blobs.path("video", info["video_sha"]))[: len(traj)]
        return traj

    # ---- queries ---------------------------------------------------------------------------
    def add_queries(self, groups: Iterable[Sequence[str]], strategy: str = "manual", batch: int | None = None) -> list[str]:
        """Add pair or triplet queries (each a sequence of 2 or 3 trajectory ids); all or none.

        Asking a group again is allowed here on purpose (repeats measure how consistent a
        person is); `select_queries` never proposes a group that was already asked.
        """
        groups = [tuple(g) for g in groups]
        with self._session() as s:  # only the ids these queries use, not the whole table
            needed = {tid for g in groups for tid in g if isinstance(tid, str)}
            known = set(s.scalars(select(TrajectoryRow.id).where(TrajectoryRow.id.in_(needed))))
        for g in groups:
            if len(g) not in (2, 3):
                raise RobalignError(f"a query compares 2 (pair) or 3 (triplet) trajectories; got {len(g)}: {g}")
            if len(set(g)) != len(g):
                raise RobalignError(f"a query must compare different trajectories; got {g}")
            for tid in g:
                if tid not in known:
                    raise UnknownIdError(f"unknown trajectory id {str(tid)[:80]!r} in query {g}")
        now = time.time()
        with self._session() as s, s.begin():
            if batch is None:
                batch = (s.scalar(select(func.max(QueryRow.batch))) or 0) + 1
            rows = [
                QueryRow(id=uuid.uuid4().hex, kind="pair" if len(g) == 2 else "triplet", traj_a=g[0], traj_b=g[1],
                         traj_c=g[2] if len(g) == 3 else None, strategy=strategy, batch=batch, created_at=now + i * 1e-6)
                for i, g in enumerate(groups)
            ]
            s.add_all(rows)
        return [r.id for r in rows]

    def query(self, query_id: str) -> dict:
        with self._session() as s:
            row = s.get(QueryRow, query_id) if isinstance(query_id, str) else None
            if row is None:
                raise UnknownIdError(f"unknown query id {str(query_id)[:80]!r}")
            return _query_dict(row)

    def queries(self) -> list[dict]:
        with self._session() as s:
            return [_query_dict(r) for r in s.scalars(select(QueryRow).order_by(QueryRow.batch, QueryRow.created_at))]

    def next_query(self, annotator_id: str, answers_per_query: int = 1) -> dict | None:
        """The oldest query this annotator has not answered that still needs answers, or None.

        A query needs answers until `answers_per_query` annotators answered it with anything
        but "skip"; whoever skipped it is not asked again.
        """
        with self._session() as s:
            row = s.scalars(
                select(QueryRow).where(*_open_to(annotator_id, answers_per_query))
                .order_by(QueryRow.batch, QueryRow.created_at).limit(1)
            ).first()
            return None if row is None else _query_dict(row)

    # ---- annotators ------------------------------------------------------------------------
    def add_annotator(self, name: str, kind: str = "human") -> tuple[str, str]:
        """Register an annotator; returns (annotator_id, token). Only the token's hash is kept."""
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise RobalignError(f"annotator name must be a non-empty string of at most 128 characters; got {name!r}")
        if kind not in ANNOTATOR_KINDS:
            raise RobalignError(f"annotator kind must be one of {', '.join(ANNOTATOR_KINDS)}; got {kind!r}")
        token = secrets.token_urlsafe(24)
        row = AnnotatorRow(id=uuid.uuid4().hex, name=name, kind=kind, token_sha=hash_token(token), created_at=time.time())
        with self._session() as s:
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                raise RobalignError(f"an annotator named {name!r} already exists; choose another name") from None
        return row.id, token

    def simulated_annotator(self, name: str) -> tuple[str, str]:
        """(id, fresh token) of the simulated annotator `name`, created if absent.

        Simulated people run from the same machine as the store, so their token may be
        replaced on each run; a person's token is never reissued this way.
        """
        token = secrets.token_urlsafe(24)
        with self._session() as s, s.begin():
            row = s.scalars(select(AnnotatorRow).where(AnnotatorRow.name == name)).first()
            if row is None:
                row = AnnotatorRow(id=uuid.uuid4().hex, name=name, kind="simulated", token_sha=hash_token(token),
                                   created_at=time.time())
                s.add(row)
            elif row.kind != "simulated":
                raise RobalignError(f"annotator {name!r} is a person, not a simulated annotator; choose another name")
            else:
                row.token_sha = hash_token(token)
        return row.id, token

    def annotator_for_token(self, token: str) -> dict | None:
        """The annotator this token belongs to, or None."""
        if not isinstance(token, str) or not token:
            return None
        with self._session() as s:
            row = s.scalars(select(AnnotatorRow).where(AnnotatorRow.token_sha == hash_token(token))).first()
            return None if row is None else {"id": row.id, "name": row.name, "kind": row.kind}

    def annotators(self) -> list[dict]:
        with self._session() as s:
            return [{"id": r.id, "name": r.name, "kind": r.kind}
                    for r in s.scalars(select(AnnotatorRow).order_by(AnnotatorRow.created_at))]

    # ---- answers ---------------------------------------------------------------------------
    def record_answer(self, query_id: str, annotator_id: str, choice: str, ranking: Sequence[int] | None = None,
                      response_ms: float | None = None) -> tuple[Answer, bool]:
        """Store one answer; returns (answer, created). Idempotent per (query, annotator).

        Posting the same answer again returns the stored one with created=False; a
        different answer to a query the annotator already answered is an AnswerConflictError.
        """
        query = self.query(query_id)  # a short read transaction of its own (queries are never deleted)
        ranking = _check_answer(query, choice, ranking, response_ms)
        with self._session() as s:
            if s.get(AnnotatorRow, annotator_id) is None:
                raise UnknownIdError(f"unknown annotator id {str(annotator_id)[:80]!r}")
        row = AnswerRow(query_id=query_id, annotator_id=annotator_id, choice=choice,
                        ranking=",".join(map(str, ranking)) if ranking else None,
                        response_ms=None if response_ms is None else float(response_ms), created_at=time.time())
        with self._session() as s:
            s.add(row)
            try:
                s.commit()
                return _answer(row), True
            except IntegrityError:
                s.rollback()
        existing = self.answer(query_id, annotator_id)
        if existing is None:  # the IntegrityError was not the uniqueness rule
            raise RobalignError(f"the answer to query {query_id} could not be stored")
        if (existing.choice, existing.ranking) != (choice, tuple(ranking) if ranking else None):
            raise AnswerConflictError(
                f"annotator already answered query {query_id} with {existing.choice}"
                f"{' ' + str(list(existing.ranking)) if existing.ranking else ''}; answers cannot be changed"
            )
        return existing, False

    def answer(self, query_id: str, annotator_id: str) -> Answer | None:
        with self._session() as s:
            row = s.scalars(select(AnswerRow).where(AnswerRow.query_id == query_id,
                                                    AnswerRow.annotator_id == annotator_id)).first()
            return None if row is None else _answer(row)

    def answers(self, annotator_id: str | None = None) -> list[Answer]:
        with self._session() as s:
            q = select(AnswerRow).order_by(AnswerRow.id)
            if annotator_id is not None:
                q = q.where(AnswerRow.annotator_id == annotator_id)
            return [_answer(r) for r in s.scalars(q)]

    def progress(self, annotator_id: str, answers_per_query: int = 1) -> dict:
        """How far an annotator is: answered (skips included), still open to them, total queries."""
        with self._session() as s:
            total = s.scalar(select(func.count()).select_from(QueryRow))
            mine = s.scalar(select(func.count()).where(AnswerRow.annotator_id == annotator_id))
            open_ = s.scalar(select(func.count()).select_from(QueryRow).where(*_open_to(annotator_id, answers_per_query)))
        return {"answered": int(mine), "remaining": int(open_), "total": int(total)}

    def labels(self) -> list[tuple[tuple[str, ...], float | None]]:
        """Every answer in the order given: ((a, b), P(a preferred over b)) for a pair
        ("A" 1.0, "B" 0.0, "tie" 0.5), ((best, middle, worst), None) for a ranked triplet.
        Skips give nothing."""
        out: list[tuple[tuple[str, ...], float | None]] = []
        with self._session() as s:
            rows = s.execute(select(AnswerRow, QueryRow).join(QueryRow, AnswerRow.query_id == QueryRow.id)
                             .order_by(AnswerRow.id)).all()
        for ans, q in rows:
            trajs = [q.traj_a, q.traj_b] + ([q.traj_c] if q.traj_c else [])
            if ans.choice in ("A", "B", "tie"):
                out.append(((q.traj_a, q.traj_b), {"A": 1.0, "B": 0.0, "tie": 0.5}[ans.choice]))
            elif ans.choice == "rank":
                out.append((tuple(trajs[int(i)] for i in ans.ranking.split(",")), None))
        return out

    def comparisons(self) -> list[tuple[str, str, float]]:
        """Every answer as pairwise labels: (traj_i, traj_j, P(i preferred over j)); a
        ranked triplet [i, j, k] gives its three implied pairs."""
        return pairs_of(self.labels())

    # ---- export / import ---------------------------------------------------------------------
    def export_parquet(self, directory: str | Path) -> Path:
        """Write every table as parquet plus the blobs they use, into a new `directory`."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from robalign.data.outputs import atomic_output_dir

        with atomic_output_dir(directory) as tmp, self._session() as s:
            for name, model in TABLES.items():
                cols = [c.name for c in model.__table__.columns if not (name == "answers" and c.name == "id")]
                rows = [dict(zip(cols, r)) for r in s.execute(select(*[model.__table__.c[c] for c in cols]))]
                table = pa.Table.from_pylist(rows, schema=_arrow_schema(model, cols))
                pq.write_table(table, tmp / f"{name}.parquet")
            for row in s.scalars(select(TrajectoryRow)):
                for kind, sha in (("arrays", row.id), ("video", row.video_sha)):
                    if sha is not None:
                        dest = BlobStore(tmp).path(kind, sha)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(self.blobs.path(kind, sha), dest)
            (tmp / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "tables": list(TABLES)}))
        return Path(directory)

    def import_parquet(self, directory: str | Path) -> dict[str, int]:
        """Merge an export into this store in one transaction; returns rows added per table.

        Rows already present (same id; answers: same query and annotator) are skipped; an
        answer that contradicts a stored one is an error and nothing is imported.
        """
        import pyarrow.parquet as pq

        directory = Path(directory)
        manifest_path = directory / "manifest.json"
        if not manifest_path.exists():
            raise RobalignError(f"{str(directory)!r} is not a preference export (no manifest.json)")
        version = json.loads(manifest_path.read_text()).get("schema_version")
        if version != SCHEMA_VERSION:
            raise RobalignError(f"export has schema version {version}; this robalign reads version {SCHEMA_VERSION}")
        tables = {name: pq.read_table(directory / f"{name}.parquet").to_pylist() for name in TABLES}
        source = BlobStore(directory)
        for row in tables["trajectories"]:  # blobs first: content-addressed, so harmless if the rest fails
            for kind, sha in (("arrays", row["id"]), ("video", row["video_sha"])):
                if sha is not None:
                    self.blobs.put(kind, source.get(kind, sha))
        added = dict.fromkeys(TABLES, 0)
        with self._session() as s, s.begin():
            for name in ("trajectories", "annotators", "queries"):
                model = TABLES[name]
                for row in tables[name]:
                    if s.get(model, row["id"]) is None:
                        s.add(model(**row))
                        added[name] += 1
                s.flush()
            for row in tables["answers"]:
                old = s.scalars(select(AnswerRow).where(AnswerRow.query_id == row["query_id"],
                                                        AnswerRow.annotator_id == row["annotator_id"])).first()
                if old is None:
                    s.add(AnswerRow(**row))
                    added["answers"] += 1
                elif (old.choice, old.ranking) != (row["choice"], row["ranking"]):
                    raise AnswerConflictError(
                        f"import conflicts with the store: annotator {row['annotator_id']} answered query "
                        f"{row['query_id']} with {old.choice} here and {row['choice']} in the export; nothing imported"
                    )
        return added


# ---- helpers ------------------------------------------------------------------------------
def pairs_of(labels: list[tuple[tuple[str, ...], float | None]]) -> list[tuple[str, str, float]]:
    """Labels as `labels()` gives them -> pairs (a, b, P(a over b)); a triplet gives its three pairs."""
    out = []
    for ids, p in labels:
        if p is not None:
            out.append((ids[0], ids[1], float(p)))
        else:
            out += [(ids[i], ids[j], 1.0) for i in range(3) for j in range(i + 1, 3)]
    return out


def _open_to(annotator_id: str, answers_per_query: int) -> tuple:
    """WHERE clauses of the queries still open to an annotator: not yet answered (or skipped)
    by them, and fewer than `answers_per_query` non-skip answers from anyone."""
    counted = (select(func.count()).where(AnswerRow.query_id == QueryRow.id, AnswerRow.choice != "skip")
               .correlate(QueryRow).scalar_subquery())
    return (QueryRow.id.not_in(select(AnswerRow.query_id).where(AnswerRow.annotator_id == annotator_id)),
            counted < answers_per_query)


def _make_engine(url: str):
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cur.execute("PRAGMA synchronous=FULL")  # a committed answer survives a power cut
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except Exception as err:  # bad URL or missing driver: say which
        raise RobalignError(f"cannot use database URL {url!r}: {err}") from None


def _check_answer(query: dict, choice: str, ranking, response_ms) -> tuple[int, ...] | None:
    allowed = PAIR_CHOICES if query["kind"] == "pair" else TRIPLET_CHOICES
    if choice not in allowed:
        raise RobalignError(f"choice {str(choice)[:20]!r} is not allowed for a {query['kind']} query; "
                            f"allowed: {', '.join(allowed)}")
    if choice == "rank":
        if (not isinstance(ranking, (list, tuple)) or not all(type(i) is int for i in ranking)
                or sorted(ranking) != [0, 1, 2]):
            raise RobalignError(f"a triplet ranking must order 0, 1 and 2 (best first), e.g. [2, 0, 1]; got {ranking!r}")
        ranking = tuple(int(i) for i in ranking)
    elif ranking is not None:
        raise RobalignError(f"only choice 'rank' takes a ranking; got choice {choice!r} with ranking {ranking!r}")
    if response_ms is not None and (type(response_ms) not in (int, float) or not 0 <= response_ms < 1e8):
        raise RobalignError(f"response_ms must be a number of milliseconds in [0, 1e8); got {response_ms!r}")
    return ranking


def pack_arrays(traj: Trajectory) -> bytes:
    """A Trajectory without frames as safetensors bytes (deterministic: its sha256 is its id)."""
    from safetensors.numpy import save

    tensors = {"state": traj.state, "action": traj.action}
    if traj.env_state is not None:
        tensors["env_state"] = traj.env_state
    tensors.update({f"info.{k}": v for k, v in traj.info.items()})
    tensors = {k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())}
    # one metadata key: safetensors keeps metadata in a hash map, so several keys would be
    # written in a random order and the same trajectory would hash differently
    record = {"instruction": traj.instruction, "success": bool(traj.success), "mode": traj.mode,
              "provenance": traj.provenance}
    metadata = {"robalign.trajectory": json.dumps(record, sort_keys=True, default=str)}
    return save(tensors, metadata=metadata)


def unpack_arrays(data: bytes) -> Trajectory:
    """A Trajectory (without frames) from the bytes of an arrays blob."""
    from safetensors.numpy import load

    tensors = load(data)
    header_len = int.from_bytes(data[:8], "little")  # safetensors: u64 length, then a JSON header
    meta = json.loads(json.loads(data[8:8 + header_len])["__metadata__"]["robalign.trajectory"])
    return Trajectory(
        state=tensors["state"], action=tensors["action"], env_state=tensors.get("env_state"),
        info={k[len("info."):]: v for k, v in tensors.items() if k.startswith("info.")},
        instruction=meta["instruction"], success=meta["success"], mode=meta["mode"], provenance=meta["provenance"],
    )


def _encode_video(frames: np.ndarray, fps: int) -> bytes:
    from robalign.data.videos import write_mp4

    with tempfile.TemporaryDirectory() as tmp:
        return write_mp4(Path(tmp) / "v.mp4", frames, fps=fps).read_bytes()


def _decode_video(path: Path) -> np.ndarray:
    import imageio.v2 as imageio

    return np.stack(imageio.mimread(path, memtest=False))


def _arrow_schema(model, cols):
    import pyarrow as pa

    types = {Integer: pa.int64(), Float: pa.float64(), Boolean: pa.bool_()}
    fields = []
    for c in cols:
        col = model.__table__.c[c]
        fields.append(pa.field(c, next((t for k, t in types.items() if isinstance(col.type, k)), pa.string())))
    return pa.schema(fields)


def _trajectory_dict(row: TrajectoryRow) -> dict:
    return {"id": row.id, "env": row.env, "instruction": row.instruction, "success": row.success,
            "length": row.length, "mode": row.mode, "video_sha": row.video_sha,
            "provenance": json.loads(row.provenance)}


def _query_dict(row: QueryRow) -> dict:
    trajs = [row.traj_a, row.traj_b] + ([row.traj_c] if row.traj_c else [])
    return {"id": row.id, "kind": row.kind, "trajectories": trajs, "strategy": row.strategy, "batch": row.batch}


def _answer(row: AnswerRow) -> Answer:
    return Answer(row.query_id, row.annotator_id, row.choice,
                  tuple(int(i) for i in row.ranking.split(",")) if row.ranking else None,
                  row.response_ms, row.created_at)
