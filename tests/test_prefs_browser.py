"""The annotation page in a real headless Chromium, driven by the keyboard only."""

import shutil

import pytest

from robalign.preferences import PreferenceStore
from robalign.preferences.simulate import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a root user on a machine without network: no sandbox, no background traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]

pytestmark = pytest.mark.slow


def test_three_comparisons_by_keyboard_land_in_the_database(tmp_path, make_trajectory):
    playwright = pytest.importorskip("playwright.sync_api")
    store = PreferenceStore(tmp_path / "store")
    ids = [store.add_trajectory(make_trajectory(i)) for i in range(5)]
    q_pair1, q_pair2, q_triplet = store.add_queries([(ids[0], ids[1]), (ids[2], ids[3]), (ids[1], ids[3], ids[4])])
    alice, token = store.add_annotator("alice")

    with running_server(store) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(f"{url}/?token={token}")
        assert "token=" not in page.url, "the token must leave the address bar"

        # 1: a pair; both videos play, side by side, with the instruction shown
        page.wait_for_selector("#option-B video")
        assert page.inner_text("#instruction") == "Task: “move the block (variant 0)”"
        assert page.inner_text("#progress") == "0 answered · 3 to go"
        page.wait_for_function("Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 2)")
        widths = page.eval_on_selector_all("video", "vs => vs.map(v => v.videoWidth)")
        assert widths == [64, 64], f"the H.264 videos did not decode in Chromium: widths {widths}"
        page.keyboard.press("ArrowLeft")

        # 2: the next pair, answered "B"
        page.wait_for_function("document.getElementById('progress').textContent.startsWith('1 answered')")
        page.keyboard.press("ArrowRight")

        # 3: a triplet: press 3 then 1 -> ranking [2, 0, 1]
        page.wait_for_selector("#option-C video")
        page.keyboard.press("3")
        page.keyboard.press("1")
        page.wait_for_selector("#done")
        assert page.inner_text("#progress") == "3 answered · 0 to go"
        assert errors == []
        browser.close()

    got = {a.query_id: (a.choice, a.ranking) for a in store.answers(alice)}
    assert got == {q_pair1: ("A", None), q_pair2: ("B", None), q_triplet: ("rank", (2, 0, 1))}
    assert all(a.response_ms is not None and a.response_ms > 0 for a in store.answers(alice))
