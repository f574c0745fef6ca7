"""PreferenceStore: content addressing, idempotent answers, schema versions, parquet round trip."""

import sqlite3

import numpy as np
import pytest

from robalign.errors import RobalignError
from robalign.preferences import AnswerConflictError, PreferenceStore, UnknownIdError
from robalign.preferences.blobs import BadBlobName


@pytest.fixture
def store(tmp_path):
    with PreferenceStore(tmp_path / "store") as s:
        yield s


def test_trajectories_are_content_addressed_and_round_trip(store, make_trajectory):
    traj = make_trajectory(3)
    tid = store.add_trajectory(traj)
    assert store.add_trajectory(make_trajectory(3)) == tid, "the same trajectory must get the same id"
    assert store.add_trajectory(make_trajectory(4)) != tid
    assert store.trajectory_ids() == [tid, store.trajectory_ids()[1]]
    back = store.load_trajectory(tid, frames=True)
    np.testing.assert_array_equal(back.state, traj.state)
    np.testing.assert_array_equal(back.action, traj.action)
    np.testing.assert_array_equal(back.info["score"], traj.info["score"])
    assert (back.instruction, back.success, back.mode, back.provenance) == (
        traj.instruction, traj.success, traj.mode, traj.provenance)
    assert back.frames.shape == traj.frames.shape
    assert np.abs(back.frames.astype(int) - traj.frames).mean() < 8  # H.264 is lossy
    info = store.trajectory_info(tid)
    assert store.blobs.path("video", info["video_sha"]).is_file()


def test_sqlite_runs_in_wal_mode_with_full_sync(store):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_answers_are_idempotent_and_never_overwritten(store, make_trajectory):
    ids = [store.add_trajectory(make_trajectory(i, frames=False)) for i in range(3)]
    pair, triplet = store.add_queries([ids[:2], ids])
    alice, _ = store.add_annotator("alice")
    _, created = store.record_answer(pair, alice, "A", response_ms=1200)
    assert created
    again, created = store.record_answer(pair, alice, "A", response_ms=999)
    assert not created and again.response_ms == 1200
    with pytest.raises(AnswerConflictError, match="already answered .* with A"):
        store.record_answer(pair, alice, "B")
    store.record_answer(triplet, alice, "rank", ranking=[2, 0, 1])
    assert len(store.answers()) == 2
    assert store.comparisons() == [(ids[0], ids[1], 1.0), (ids[2], ids[0], 1.0), (ids[2], ids[1], 1.0),
                                   (ids[0], ids[1], 1.0)]


@pytest.mark.parametrize("choice, ranking, message", [
    ("C", None, "not allowed for a pair query; allowed: A, B, tie, skip"),
    ("rank", [0, 1, 2], "not allowed for a pair query"),
    ("A", [0, 1, 2], "only choice 'rank' takes a ranking"),
])
def test_bad_pair_answers_are_refused(store, make_trajectory, choice, ranking, message):
    ids = [store.add_trajectory(make_trajectory(i, frames=False)) for i in range(2)]
    [pair] = store.add_queries([ids])
    alice, _ = store.add_annotator("alice")
    with pytest.raises(RobalignError, match=message):
        store.record_answer(pair, alice, choice, ranking)
    assert store.answers() == []


def test_bad_triplet_rankings_and_unknown_ids_are_refused(store, make_trajectory):
    ids = [store.add_trajectory(make_trajectory(i, frames=False)) for i in range(3)]
    [triplet] = store.add_queries([ids])
    alice, _ = store.add_annotator("alice")
    for ranking in ([0, 1], [0, 0, 1], [0, 1, 3], None):
        with pytest.raises(RobalignError, match="a triplet ranking must order 0, 1 and 2"):
            store.record_answer(triplet, alice, "rank", ranking)
    with pytest.raises(UnknownIdError, match="unknown query id"):
        store.record_answer("nope", alice, "A")
    with pytest.raises(UnknownIdError, match="unknown annotator id"):
        store.record_answer(triplet, "nobody", "skip")
    with pytest.raises(UnknownIdError, match="unknown trajectory id"):
        store.add_queries([(ids[0], "f" * 64)])
    with pytest.raises(RobalignError, match="2 \\(pair\\) or 3 \\(triplet\\)"):
        store.add_queries([ids[:1]])
    with pytest.raises(RobalignError, match="different trajectories"):
        store.add_queries([(ids[0], ids[0])])
    assert store.answers() == [] and len(store.queries()) == 1


def test_next_query_skips_answered_and_respects_answers_per_query(store, make_trajectory):
    ids = [store.add_trajectory(make_trajectory(i, frames=False)) for i in range(3)]
    q1, q2 = store.add_queries([ids[:2], ids[1:]])
    alice, _ = store.add_annotator("alice")
    bob, _ = store.add_annotator("bob")
    assert store.next_query(alice)["id"] == q1
    store.record_answer(q1, alice, "skip")
    assert store.next_query(alice)["id"] == q2  # alice skipped q1: not asked again
    assert store.next_query(bob)["id"] == q1  # a skip does not count as an answer
    store.record_answer(q1, bob, "tie")
    store.record_answer(q2, bob, "B")
    assert store.next_query(alice) is None  # q2 has its one answer
    assert store.next_query(alice, answers_per_query=2)["id"] == q2
    assert store.progress(alice) == {"answered": 1, "remaining": 0, "total": 2}


def test_tokens_are_stored_only_as_hashes(store, tmp_path):
    alice, token = store.add_annotator("alice")
    assert store.annotator_for_token(token)["id"] == alice
    assert store.annotator_for_token(token + "x") is None
    raw = (tmp_path / "store" / "store.sqlite").read_bytes()
    assert token.encode() not in raw
    with pytest.raises(RobalignError, match="already exists"):
        store.add_annotator("alice")


def test_newer_schema_is_refused_and_nothing_is_changed(tmp_path):
    PreferenceStore(tmp_path / "s").close()
    db = tmp_path / "s" / "store.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(RobalignError, match="schema version 99, newer than this robalign understands \\(1\\)"):
        PreferenceStore(tmp_path / "s")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("99",)


def test_opening_a_missing_store_without_create_is_an_error(tmp_path):
    with pytest.raises(RobalignError, match="no preference store"):
        PreferenceStore(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_blob_names_must_be_sha256(store):
    for name in ("../store.sqlite", "a" * 63, "A" * 64, "a" * 64 + "/../x", ""):
        with pytest.raises(BadBlobName):
            store.blobs.path("video", name)


def test_corrupted_blob_is_detected(store, make_trajectory):
    tid = store.add_trajectory(make_trajectory(1, frames=False))
    path = store.blobs.path("arrays", tid)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(RobalignError, match="corrupted"):
        store.load_trajectory(tid)


def test_parquet_export_import_round_trip_is_idempotent(store, make_trajectory, tmp_path):
    ids = [store.add_trajectory(make_trajectory(i)) for i in range(3)]
    pair, triplet = store.add_queries([ids[:2], ids])
    alice, token = store.add_annotator("alice")
    store.record_answer(pair, alice, "tie", response_ms=10)
    store.record_answer(triplet, alice, "rank", ranking=[1, 2, 0])
    store.export_parquet(tmp_path / "export")

    with PreferenceStore(tmp_path / "copy") as copy:
        assert copy.import_parquet(tmp_path / "export") == {"trajectories": 3, "annotators": 1, "queries": 2, "answers": 2}
        assert copy.import_parquet(tmp_path / "export") == dict.fromkeys(["trajectories", "annotators", "queries", "answers"], 0)
        assert copy.comparisons() == store.comparisons()
        assert copy.annotator_for_token(token)["id"] == alice
        np.testing.assert_array_equal(copy.load_trajectory(ids[1]).action, store.load_trajectory(ids[1]).action)
        assert copy.load_trajectory(ids[1], frames=True).frames.shape == (8, 48, 64, 3)


def test_conflicting_import_changes_nothing(store, make_trajectory, tmp_path):
    import pyarrow.parquet as pq

    ids = [store.add_trajectory(make_trajectory(i, frames=False)) for i in range(2)]
    [pair] = store.add_queries([ids])
    alice, _ = store.add_annotator("alice")
    store.record_answer(pair, alice, "A")
    store.export_parquet(tmp_path / "first")
    store.record_answer(pair, store.add_annotator("carol")[0], "B")
    store.export_parquet(tmp_path / "second")
    # tamper with the second export: alice now says B
    answers = pq.read_table(tmp_path / "second" / "answers.parquet")
    rows = [{**r, "choice": "B"} if r["annotator_id"] == alice else r for r in answers.to_pylist()]
    pq.write_table(answers.from_pylist(rows, schema=answers.schema), tmp_path / "second" / "answers.parquet")

    with PreferenceStore(tmp_path / "target") as target:
        target.import_parquet(tmp_path / "first")
        with pytest.raises(AnswerConflictError, match="answered query .* with A here and B in the export; nothing imported"):
            target.import_parquet(tmp_path / "second")
        assert [(a.annotator_id, a.choice) for a in target.answers()] == [(alice, "A")]
        assert [a["name"] for a in target.annotators()] == ["alice"]  # carol was not half-imported
