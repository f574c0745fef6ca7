"""The preference verbs end to end: rollouts -> queries -> simulated answers -> export/import."""

import pytest

from robalign.cli import main
from robalign.envs.objectives import get_objective
from robalign.preferences import PreferenceStore


@pytest.mark.slow
def test_rollouts_queries_simulate_export_import(tmp_path, capsys):
    store_dir = tmp_path / "prefs"
    assert main(["rollouts", "env=reach-around", "n=3", "noise=0.05", f"store={store_dir}", "progress=false"]) == 0
    with PreferenceStore(store_dir, create=False) as store:
        ids = store.trajectory_ids()
        infos = [store.trajectory_info(t) for t in ids]
        assert [i["mode"] for i in infos] == ["left", "right", "over"]
        assert all(i["video_sha"] and store.blobs.path("video", i["video_sha"]).stat().st_size > 1000 for i in infos)
        assert store.load_trajectory(ids[0], frames=True).frames.shape[1:] == (256, 256, 3)

    # env=NAME picks the env group, as in every verb, and keeps to that task's trajectories
    assert main(["prefs", "queries", f"store={store_dir}", "n=1", "env=mug-grasp"]) == 2
    assert "for env 'mug-grasp'" in capsys.readouterr().err
    assert main(["prefs", "queries", f"store={store_dir}", "n=3", "strategy=random", "env=reach-around"]) == 0
    assert main(["prefs", "annotator", f"store={store_dir}", "name=alice"]) == 0
    assert "token: " in capsys.readouterr().out
    assert main(["prefs", "simulate", f"store={store_dir}", "objective=clearance", "progress=false"]) == 0
    assert "answered 3 queries" in capsys.readouterr().out

    clearance = get_objective("clearance")
    with PreferenceStore(store_dir, create=False) as store:
        answers = store.answers()
        assert len(answers) == 3 and {a["name"] for a in store.annotators()} == {"alice", "sim-clearance-binf-s0"}
        for a in answers:  # a perfectly rational simulated person picks the larger clearance
            q = store.query(a.query_id)
            ta, tb = (clearance(store.load_trajectory(t)) for t in q["trajectories"])
            assert a.choice == ("A" if ta > tb else "B" if tb > ta else "tie")
        comparisons = store.comparisons()

    assert main(["prefs", "export", f"store={store_dir}", f"output_dir={tmp_path / 'export'}"]) == 0
    assert main(["prefs", "import", f"store={tmp_path / 'copy'}", f"input={tmp_path / 'export'}"]) == 0
    with PreferenceStore(tmp_path / "copy", create=False) as copy:
        assert copy.comparisons() == comparisons


@pytest.mark.parametrize("argv, message", [
    (["prefs", "serve"], "store=PATH is required"),
    (["prefs", "serve", "store=/nonexistent/prefs"], "no preference store"),
    (["prefs", "annotator", "store={tmp}"], "name=NAME is required"),
    (["prefs", "simulate", "store={tmp}"], "objective=NAME is required"),
    (["prefs", "simulate", "store={tmp}", "objective=nope"], "unknown objective 'nope'"),
    (["prefs", "queries", "store={tmp}", "strategy=psychic"], "psychic"),
    (["prefs", "export", "store={tmp}"], "output_dir=PATH is required"),
    (["prefs", "import", "store={tmp}", "input={tmp}"], "not a preference export"),
    (["prefs", "serve", "store={tmp}", "prot=1"], "unknown setting 'prot'"),
    (["rollouts", "store={tmp}", "policy=ppo", "n=1"], "policy must be `expert`, `expert:MODE` or a policy checkpoint directory"),
    (["rollouts", "store={tmp}", "policy=expert:sideways", "n=1"], "unknown mode of reach-around 'sideways'"),
    (["rollouts", "store={tmp}", "n=0"], "n must be an int > 0"),
])
def test_bad_preference_commands_say_what_is_wrong(tmp_path, capsys, argv, message):
    PreferenceStore(tmp_path / "store").close()
    argv = [a.format(tmp=tmp_path / "store") for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    with PreferenceStore(tmp_path / "store") as store:
        assert store.trajectory_ids() == [] and store.queries() == []
