"""The command line as a user meets it: exit codes, JSON on stdout only, one-line errors."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import photo, save


def ndup(*args, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ndup", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_lib")
    a = save(photo(11), root / "a.jpg", quality=92)
    shutil.copy(a, root / "a copy.jpg")
    save(photo(11).resize((320, 240)), root / "sub/a_small.jpg")
    save(photo(12), root / "b.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    return root


def test_scan_json_shape_and_exit_code(lib, tmp_path):
    db = tmp_path / "c.db"
    r = ndup("scan", lib, "--db", db, "--json", "--exit-code")
    assert r.returncode == 10, r.stderr
    assert r.stderr == ""  # no progress bars when stderr is not a terminal
    doc = json.loads(r.stdout)
    assert set(doc) >= {"groups", "failures", "summary"}
    [g] = doc["groups"]
    assert g["tier"] == "copy" and g["keep"] == str(lib / "a.jpg") and isinstance(g["id"], int)
    for m in g["members"]:
        assert set(m) >= {"path", "action", "score", "reason"} and os.path.isabs(m["path"])
        assert m["action"] in ("keep", "delete") and isinstance(m["score"], float) and m["reason"]
    assert {m["path"] for m in g["members"]} == {
        str(lib / "a.jpg"),
        str(lib / "a copy.jpg"),
        str(lib / "sub/a_small.jpg"),
    }
    assert doc["failures"] == [{"path": str(lib / "broken.jpg"), "reason": doc["failures"][0]["reason"]}]
    s = doc["summary"]
    assert (s["files_seen"], s["images"], s["failures"], s["groups"], s["to_delete"]) == (5, 4, 1, 1, 2)
    assert s["bytes_freed"] > 0

    shown = ndup("groups", "--db", db, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["groups"] == doc["groups"]
    table = ndup("plan", "show", "--db", db)
    assert table.returncode == 0 and "a copy.jpg" in table.stdout and "2 files proposed for deletion" in table.stdout


def test_no_duplicates_exits_zero_even_with_exit_code(tmp_path):
    save(photo(21), tmp_path / "lib/x.jpg")
    save(photo(22), tmp_path / "lib/y.jpg")
    r = ndup("scan", tmp_path / "lib", "--db", tmp_path / "c.db", "--exit-code")
    assert r.returncode == 0, r.stderr
    assert "No duplicates found." in r.stdout


def test_ndup_db_environment_variable_names_the_cache(lib, tmp_path):
    db = tmp_path / "from_env.db"
    r = ndup("scan", lib, "--quiet", env={"NDUP_DB": str(db)})
    assert r.returncode == 0 and db.exists()
    assert ndup("groups", env={"NDUP_DB": str(db)}).returncode == 0


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["scan", "/definitely/not/here"], 2, "ndup: error: no such file or folder: /definitely/not/here"),
        (["scan"], 2, "ndup: error: no folder to scan"),
        (["scan", ".", "--no-such-flag"], 2, "No such option"),
        (["groups"], 1, "ndup: error: no plan yet in this cache"),
        (["scan", ".", "--device", "cuda"], 1, "ndup: error: --device cuda was asked for"),
    ],
)
def test_errors_are_one_clear_line_without_traceback(tmp_path, args, code, message):
    if args[:2] == ["scan", "."]:
        save(photo(1), tmp_path / "one.jpg")
    r = ndup(*args, "--db", tmp_path / "c.db", cwd=tmp_path) if args != ["scan"] else ndup(*args, cwd=tmp_path)
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_unusable_cache_location_is_a_clear_error(lib, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = ndup("scan", lib, "--db", blocker / "ndup.db")
    assert r.returncode == 1
    assert r.stderr.startswith("ndup: error: cannot create the cache folder") and "--db" in r.stderr
    assert "Traceback" not in r.stderr


def test_version_and_help():
    r = ndup("--version")
    from ndup import __version__

    assert r.returncode == 0 and r.stdout.strip() == f"ndup {__version__}"
    h = ndup("scan", "--help")
    assert h.returncode == 0 and "--exclude" in h.stdout and "--exit-code" in h.stdout
