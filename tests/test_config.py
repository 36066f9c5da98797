"""The config file: defaults < file < environment < flags, clear errors, and `ndup config show`."""

import json
import os

import pytest
from conftest import photo, save
from test_cli import ndup

from ndup import config
from ndup.errors import NdupError

EXAMPLE = """
[scan]
roots = ["~/Photos"]
exclude = ["*.tmp", "Thumbnails"]
protect = ["~/Photos/Originals"]

[keeper]
prefer = "resolution,format:raw>heic>png>jpg,size,exif,oldest,path:~/Photos/Originals"

[thresholds]
burst_seconds = 3
neighbors = 20

[run]
device = "cpu"
workers = 2
"""


def write_config(home, text: str):
    path = home / ".config" / "ndup" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_a_config_file(isolated_home):
    eff = config.effective()
    assert eff.file == isolated_home / ".config/ndup/config.toml" and not eff.file_found
    assert set(eff.sources.values()) == {"default"}
    assert eff["keeper.prefer"] == "pixels,format,size,exif,oldest,path"
    assert eff["cache.db"] == str(isolated_home / ".cache/ndup/ndup.db")


def test_file_then_environment_then_flags(isolated_home, monkeypatch):
    path = write_config(isolated_home, EXAMPLE)
    monkeypatch.setenv("NDUP_WORKERS", "3")
    eff = config.effective({"run.device": ("auto", "flag --device")})
    home = str(isolated_home)
    assert eff["scan.roots"] == [f"{home}/Photos"] and eff["scan.protect"] == [f"{home}/Photos/Originals"]
    assert eff.sources["scan.roots"] == f"file {path}:3"
    assert eff["thresholds.burst_seconds"] == 3.0 and eff.sources["thresholds.burst_seconds"] == f"file {path}:11"
    assert (eff["run.workers"], eff.sources["run.workers"]) == (3, "env NDUP_WORKERS")
    assert (eff["run.device"], eff.sources["run.device"]) == ("auto", "flag --device")
    assert eff.sources["thresholds.burst_similarity"] == "default"
    s = config.scan_settings(None, {"scan.exclude": (["*.bak"], "flag --exclude")})
    assert s.roots == (isolated_home / "Photos",) and s.excludes == ("*.bak",) and s.workers == 3
    assert s.protect == (f"{home}/Photos/Originals",) and s.prefer.startswith("resolution,format:raw")
    assert config.scan_settings([isolated_home], {}).roots == (isolated_home,)  # named folders win


@pytest.mark.parametrize(
    "text,message",
    [
        ("[scan]\nroots = [\n", "is not valid TOML: "),
        ("[scan]\nhidden = yes\n", "(at line 2, column 10)"),
        ("[scan]\n\nexlude = ['x']\n", "unknown setting 'exlude' in [scan] of config file {path}:3"),
        ("[sacn]\nroots = []\n", "unknown section [sacn] in config file {path}:1"),
        ("[run]\nworkers = 'two'\n", "run.workers must be a whole number, not 'two' (file {path}:2)"),
        ("[run]\ndevice = 'tpu'\n", "unknown device 'tpu' (file {path}:2)"),
        ("[keeper]\nprefer = 'pixels,colour'\n", "unknown keeper rule 'colour' in keeper.prefer (file {path}:2)"),
        ("[thresholds]\nburst_similarity = 2\n", "must be a cosine between -1 and 1"),
    ],
)
def test_a_malformed_config_file_is_one_clear_error_naming_file_and_line(isolated_home, text, message):
    path = write_config(isolated_home, text)
    with pytest.raises(NdupError) as e:
        config.effective()
    assert message.format(path=path) in str(e.value) and e.value.exit_code == 2


def test_bad_environment_values_are_clear_errors(monkeypatch):
    monkeypatch.setenv("NDUP_WORKERS", "many")
    with pytest.raises(NdupError, match="NDUP_WORKERS='many' must be a whole number"):
        config.effective()


def test_ndup_config_file_env_chooses_another_file(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere.toml"
    other.write_text('[keeper]\npick = "sharpness"\n')
    monkeypatch.setenv("NDUP_CONFIG", str(other))
    eff = config.effective()
    assert eff.file == other and eff["keeper.pick"] == "sharpness"


@pytest.mark.slow
def test_config_show_and_scan_use_the_file(isolated_home, tmp_path):
    lib = tmp_path / "lib"
    save(photo(50), lib / "a.jpg", quality=95)
    save(photo(50).resize((320, 240)), lib / "small/a.jpg")
    save(photo(50), lib / "kept/a_copy.jpg", quality=95)
    db = tmp_path / "c.db"
    path = write_config(isolated_home, f'[scan]\nroots = ["{lib}"]\nprotect = ["{lib}/kept"]\n[cache]\ndb = "{db}"\n')
    env = {"NDUP_DEVICE": "cpu"}
    shown = ndup("config", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["config_file"] == str(path) and doc["config_file_found"]
    assert doc["settings"]["scan.roots"] == {"value": [str(lib)], "source": f"file {path}:2"}
    assert doc["settings"]["run.device"] == {"value": "cpu", "source": "env NDUP_DEVICE"}
    table = ndup("config", "show", env=env)
    assert table.returncode == 0 and "keeper.prefer" in table.stdout and f"file {path}:2" in table.stdout

    r = ndup("scan", "--json", "--workers", "1", env=env)  # no folder named: the file's roots; cache from the file
    assert r.returncode == 0, r.stderr
    [g] = json.loads(r.stdout)["groups"]
    actions = {os.path.relpath(m["path"], lib): m["action"] for m in g["members"]}
    assert actions == {"a.jpg": "keep", "small/a.jpg": "delete", "kept/a_copy.jpg": "review"}
    assert db.exists() and ndup("groups", "--json").returncode == 0  # groups finds the same cache

    bad = ndup("scan", lib, "--prefer", "pixels,colour")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("ndup: error: unknown keeper rule 'colour' in --prefer (hint: valid rules: pixels")
    write_config(isolated_home, "[scan]\nroots = 3\n")
    broken = ndup("config", "show")
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1
    assert broken.stderr.startswith(f"ndup: error: scan.roots must be a list of strings, not 3 (file {path}:2)")
