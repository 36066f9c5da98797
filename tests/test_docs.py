"""The man page and shell completions are generated from the CLI and committed: they must be current,
render cleanly, and name every command; so must the README."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ndup import docgen
from ndup.cli import app

ROOT = Path(__file__).resolve().parent.parent
STALE = "stale: run `python -m ndup.docgen` and commit the result"


def test_generated_files_are_current(tmp_path):
    assert docgen.main(["--out", str(tmp_path)]) == 0
    for rel in docgen.outputs():
        assert (tmp_path / rel).read_bytes() == (ROOT / rel).read_bytes(), f"{rel} is {STALE}"
    assert docgen.main(["--check", "--out", str(ROOT)]) == 0, STALE


def test_the_generator_is_deterministic():
    assert docgen.outputs() == docgen.outputs()


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_the_man_page_renders_without_warnings():
    r = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(ROOT / "man/ndup.1")], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc is not installed")
def test_the_man_page_passes_mandoc_lint():
    r = subprocess.run(
        ["mandoc", "-T", "lint", "-W", "warning", str(ROOT / "man/ndup.1")], capture_output=True, text=True
    )
    assert r.stdout + r.stderr == "", r.stdout + r.stderr


def test_every_command_has_help_and_is_in_the_readme_and_the_man_page():
    import typer.main

    readme = (ROOT / "README.md").read_text()
    man = (ROOT / "man/ndup.1").read_text()
    names = docgen.command_names()
    assert {"ndup scan", "ndup review", "ndup apply", "ndup undo", "ndup doctor", "ndup cache prune"} <= set(names)
    root, ctx = docgen.cli_tree()
    for path, cmd, _ in docgen.walk(root, ctx):
        name = "ndup " + " ".join(path)
        assert (cmd.help or "").strip() and cmd.get_short_help_str(), f"{name} has no help text"
        for p in cmd.params:
            assert (getattr(p, "help", None) or "").strip(), f"{name}: {p.name} has no help text"
        assert name in readme, f"README.md does not mention `{name}`"
        assert name.replace("-", "\\-") in man, f"man/ndup.1 does not mention `{name}`"
    assert typer.main.get_command(app).help


def test_every_environment_variable_the_code_reads_is_in_the_man_page():
    """A variable that changes what ndup does is documented; test hooks (named so) are not."""
    import re

    man = (ROOT / "man/ndup.1").read_text().replace("\\", "")
    read = set()
    for path in (ROOT / "ndup").rglob("*.py"):
        read |= set(re.findall(r"\b(NDUP_[A-Z_]+)\b", path.read_text()))
    read -= {name for name in read if name.startswith("NDUP_TEST_")}
    assert {"NDUP_TORCH_THREADS", "NDUP_GPU_DECODE", "NDUP_DB"} <= read
    missing = sorted(name for name in read if f"fB{name}" not in man)
    assert not missing, f"man/ndup.1's ENVIRONMENT does not name {missing}: add them to ndup.docgen.ENVIRONMENT"


def _complete(env: dict[str, str]) -> str:
    r = CliRunner().invoke(app, [], env=env, prog_name="ndup")
    assert r.exit_code == 0, r.stderr
    return r.stdout


def test_the_completion_scripts_call_back_into_ndup_for_each_shell():
    bash = _complete({"_NDUP_COMPLETE": "complete_bash", "COMP_WORDS": "ndup cache p", "COMP_CWORD": "2"})
    assert bash.split() == ["prune"]
    zsh = _complete({"_NDUP_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "ndup scan --dev"})
    assert "--device" in zsh and "Where the network runs" in zsh
    fish = _complete({"_NDUP_COMPLETE": "complete_fish", "_TYPER_COMPLETE_ARGS": "ndup ca",
                      "_TYPER_COMPLETE_FISH_ACTION": "get-args"})  # fmt: skip
    assert fish.split("\t")[0] == "cache"
    for shell, rel in docgen.COMPLETIONS.items():
        assert f"_NDUP_COMPLETE=complete_{shell}" in (ROOT / rel).read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_bash_script_completes_in_bash():
    bindir = str(Path(sys.executable).parent)
    if shutil.which("ndup", path=bindir + os.pathsep + os.environ.get("PATH", "")) is None:
        pytest.skip("the ndup command is not installed")
    script = (
        f"source {ROOT / 'completions/ndup.bash'}; COMP_WORDS=(ndup scan --dev); COMP_CWORD=2; "
        '_ndup_completion ndup; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.split() == ["--device"], r.stderr


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_the_zsh_script_loads_in_zsh():
    script = f"autoload -Uz compinit && compinit -u && source {ROOT / 'completions/_ndup'} && print $_comps[ndup]"
    r = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.stdout.strip() == "_ndup_completion", r.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_the_fish_script_completes_in_fish():
    bindir = str(Path(sys.executable).parent)
    if shutil.which("ndup", path=bindir + os.pathsep + os.environ.get("PATH", "")) is None:
        pytest.skip("the ndup command is not installed")
    script = f"source {ROOT / 'completions/ndup.fish'}; complete -C 'ndup cache p'"
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    r = subprocess.run(["fish", "--no-config", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.split("\t")[0].strip() == "prune", (r.stdout, r.stderr)
