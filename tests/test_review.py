"""ndup review: driven headless with Textual's pilot, and once for real in tmux."""

import asyncio
import html
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from ndup.decisions import views
from ndup.review import ReviewApp, image_widget_class
from ndup.store import Store


@pytest.fixture
def reviewed(dup_tree):
    lib, db = dup_tree
    store = Store.open(db)
    yield lib, db, store
    store.close()


def drive(store, *keys, opened=None, size=(80, 24), screen=None):
    """Run the app headless, press keys, return it after it quit (and the last screen as text)."""

    async def go():
        app = ReviewApp(store, store.load_plan(), opener=lambda p: opened.append(p) if opened is not None else None)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            for key in keys:
                await pilot.press(key)
                await pilot.pause()
            if screen is not None:
                screen.append(screen_text(app))
        return app

    return asyncio.run(go())


def screen_text(app) -> str:
    svg = app.export_screenshot()
    rows = re.findall(r"<text [^>]*>(.*?)</text>", svg)
    return html.unescape(" ".join(rows)).replace("\xa0", " ")


def test_keys_make_decisions_that_are_saved_at_once(reviewed):
    lib, _, store = reviewed
    opened = []
    # group 1 (copy: a.jpg, backup/a.jpg, export/a_small.jpg): pick the backup as keeper, keep the small
    # export too, open it, accept; group 2 (exact b.png / b_copy.png): not duplicates
    app = drive(store, "right", "k", "right", "space", "o", "a", "x", opened=opened)
    assert opened == [str(lib / "export/a_small.jpg")]
    copy_group, exact_group = views(store.load_plan(), store)
    assert copy_group.status == "accepted" and copy_group.keep == str(lib / "backup/a.jpg")
    assert copy_group.actions == {
        str(lib / "a.jpg"): "delete",
        str(lib / "backup/a.jpg"): "keep",
        str(lib / "export/a_small.jpg"): "keep",
    }
    assert exact_group.status == "not_duplicates" and set(exact_group.actions.values()) == {"keep"}
    [ignored] = store.ignored_hash_sets()
    assert ignored == {exact_group.hashes[str(lib / "b.png")]}  # identical bytes: one hash
    assert app.summary() == "1 group accepted, 1 marked not duplicates, 0 not decided"


def test_quitting_and_coming_back_resumes_at_the_first_undecided_group(reviewed):
    _, _, store = reviewed
    drive(store, "a", "q")
    app = drive(store)
    assert app.index == 1
    screen = []
    drive(store, "space", "u", "p", screen=screen)  # toggle, reset, back to group 1
    assert "Group 1/2" in screen[0]


def test_the_keeper_cannot_be_toggled_away(reviewed):
    lib, _, store = reviewed
    screen = []
    app = drive(store, "space", screen=screen)
    assert "That is the keeper: press k on another file" in screen[0]
    assert app.view.actions[str(lib / "a.jpg")] == "keep" and not app.view.decided


def test_everything_fits_in_80x24(reviewed):
    lib, _, store = reviewed
    screen = []
    drive(store, screen=screen)
    text = screen[0]
    for needed in ["Group 1/2", "copy", "KEEP ★ keeper", "DELETE", "640x480", "JPEG", "modified", "score 1.00",
                   "Next", "Prev", "Keeper", "Toggle", "Accept", "Not dup", "Open", "Quit"]:  # fmt: skip
        assert needed in text, needed
    assert " a.jpg " in text and f"{str(lib)[-20:]} " in text  # the name, and the end of its folder


def test_no_color_without_a_graphics_protocol_leaves_pictures_out(reviewed, monkeypatch):
    _, _, store = reviewed
    assert image_widget_class() is not None
    monkeypatch.setenv("NO_COLOR", "1")
    assert image_widget_class() is None
    screen = []
    drive(store, screen=screen)
    assert "(pictures off)" in screen[0]


def test_review_needs_a_terminal(reviewed):
    _, db, _ = reviewed
    r = subprocess.run([sys.executable, "-m", "ndup", "review", "--db", str(db)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("ndup: error: ndup review needs a terminal")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_review_in_a_real_terminal_with_tmux(reviewed):
    _, db, store = reviewed
    session = f"ndup-test-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "NO_COLOR")}
    command = f"{sys.executable} -m ndup review --db {db}; echo EXIT=$?; sleep 60"
    tmux = ["tmux", "-L", session, "-f", "/dev/null"]
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command], env=env, check=True)

    def pane() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    def wait_for(*texts: str) -> str:
        """The screen once all of `texts` are on it (the app draws its parts one after another)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = pane()
            if all(text in screen for text in texts):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{texts!r} never all appeared:\n{pane()}")

    try:
        wait_for("Group 1/2", "Quit", "KEEP ★ keeper")  # the header, the footer and the first group's table
        subprocess.run([*tmux, "send-keys", "-t", session, "a"], check=True)
        wait_for("Group 2/2")
        subprocess.run([*tmux, "send-keys", "-t", session, "x"], check=True)
        wait_for("not duplicates")
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True)
        end = wait_for("EXIT=")
        assert "1 group accepted, 1 marked not duplicates, 0 not decided" in end and "EXIT=0" in end
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert [v.status for v in views(store.load_plan(), store)] == ["accepted", "not_duplicates"]
