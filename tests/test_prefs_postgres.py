"""The preference store on a real PostgreSQL server (a private cluster over a unix socket)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from robalign.preferences import AnswerConflictError, PreferenceStore

pytestmark = pytest.mark.slow
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None) if Path("/usr/lib/postgresql").exists() else None


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; the Debian package ships a `postgres` user
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def pg_url():
    if PG_BIN is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql)")
    pytest.importorskip("psycopg2")
    base = Path(tempfile.mkdtemp(prefix="robalign-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data = base / "data"
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
                   check=True, capture_output=True, timeout=120)
    # unix socket only: no TCP port is opened at all
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"),
                                 "-o", f"-k {base} -c listen_addresses=''", "start"]),
                   check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql+psycopg2://postgres@/postgres?host={base}"
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_store_works_on_postgresql(pg_url, tmp_path, make_trajectory):
    with PreferenceStore(tmp_path / "blobs", url=pg_url) as store:
        assert store.engine.dialect.name == "postgresql"
        ids = [store.add_trajectory(make_trajectory(i)) for i in range(3)]
        assert store.add_trajectory(make_trajectory(0)) == ids[0]
        pair, triplet = store.add_queries([ids[:2], ids])
        alice, token = store.add_annotator("alice")
        assert store.next_query(alice)["id"] == pair
        assert store.record_answer(pair, alice, "A")[1] is True
        assert store.record_answer(pair, alice, "A")[1] is False
        with pytest.raises(AnswerConflictError):
            store.record_answer(pair, alice, "tie")
        store.record_answer(triplet, alice, "rank", ranking=[2, 1, 0])
        assert store.annotator_for_token(token)["name"] == "alice"
        assert store.progress(alice) == {"answered": 2, "remaining": 0, "total": 2}
        store.export_parquet(tmp_path / "export")
        comparisons = store.comparisons()
    # reopening finds the same schema version and data
    with PreferenceStore(tmp_path / "blobs", url=pg_url) as again:
        assert again.schema_version == 1 and len(again.answers()) == 2
    with PreferenceStore(tmp_path / "sqlite-copy") as copy:
        copy.import_parquet(tmp_path / "export")
        assert copy.comparisons() == comparisons
