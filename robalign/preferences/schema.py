"""The preference store's tables (SQLAlchemy 2.0, SQLite or PostgreSQL).

    meta         key/value: schema_version, created_at
    trajectories one rollout: content-addressed video and arrays, env, instruction, success
    annotators   a person or simulated person; only the sha256 of their token is kept
    queries      a pair (A, B) or triplet (A, B, C) of trajectories to compare
    answers      one annotator's answer to one query: A / B / tie / skip, or a triplet ranking;
                 unique per (query, annotator), which makes posting an answer idempotent

SCHEMA_VERSION is bumped whenever a table changes; `PreferenceStore` refuses a store
written by a newer robalign and migrates older ones step by step (see MIGRATIONS).
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1

# What an answer may say. "rank" is a triplet answer whose order is in `ranking`.
PAIR_CHOICES = ("A", "B", "tie", "skip")
TRIPLET_CHOICES = ("rank", "skip")


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TrajectoryRow(Base):
    __tablename__ = "trajectories"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the arrays blob
    env: Mapped[str | None] = mapped_column(String(64), index=True)
    instruction: Mapped[str] = mapped_column(Text)
    success: Mapped[bool] = mapped_column(Boolean)
    length: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str | None] = mapped_column(String(64))
    video_sha: Mapped[str | None] = mapped_column(String(64))  # None: recorded without frames
    provenance: Mapped[str] = mapped_column(Text)  # JSON object
    created_at: Mapped[float] = mapped_column(Float)


class AnnotatorRow(Base):
    __tablename__ = "annotators"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "human" or "simulated"
    token_sha: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class QueryRow(Base):
    __tablename__ = "queries"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # "pair" or "triplet"
    traj_a: Mapped[str] = mapped_column(ForeignKey("trajectories.id"))
    traj_b: Mapped[str] = mapped_column(ForeignKey("trajectories.id"))
    traj_c: Mapped[str | None] = mapped_column(ForeignKey("trajectories.id"))
    strategy: Mapped[str] = mapped_column(String(32))  # how it was chosen: random, disagreement, ...
    batch: Mapped[int] = mapped_column(Integer)  # selection round; annotators see lower batches first
    created_at: Mapped[float] = mapped_column(Float, index=True)


class AnswerRow(Base):
    __tablename__ = "answers"
    __table_args__ = (UniqueConstraint("query_id", "annotator_id", name="one_answer_per_annotator"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    query_id: Mapped[str] = mapped_column(ForeignKey("queries.id"), index=True)
    annotator_id: Mapped[str] = mapped_column(ForeignKey("annotators.id"), index=True)
    choice: Mapped[str] = mapped_column(String(8))
    ranking: Mapped[str | None] = mapped_column(String(16))  # triplets: e.g. "2,0,1", best first
    response_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


# version -> function(connection) that upgrades a store from version-1 to version
MIGRATIONS: dict = {}
