"""The README is executable: every command in its code blocks runs as typed, in order, from the root
of a fresh clone, with relative paths and only ECUFL_DATA set (and the virtual environment's bin
first on PATH, as after `. .venv/bin/activate`); so does every `--help` and every command a
`--help` text shows. A command fails the test on a non-zero exit or on any Python traceback in
its output.

Placeholders: `results/<run>` stands for the run folder the previous run printed (`results: ...`).
The two `./bootstrap` commands are not run here: `./bootstrap test` is the command that runs this
suite in CI, and `./bootstrap run` is `make run`, the quickstart command the README also lists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

TRACEBACK = "Traceback (most recent call last)"
COMMAND_TIMEOUT = 1200.0


def readme_commands(text: str) -> list[str]:
    """The command lines of the README's fenced code blocks, in order, comments dropped."""
    out = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_every_command_of_the_readme_is_in_a_fenced_block():
    """Indented code blocks would escape the runner: commands live in fenced blocks only."""
    text = (ROOT / "README.md").read_text()
    outside = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    stray = [l for l in outside.splitlines() if re.match(r"^( {4,}|\t)(ecufl|flwr|\./bootstrap|make) ", l)]
    assert not stray, stray
    cmds = readme_commands(text)
    assert cmds[:2] == ["./bootstrap run", "./bootstrap test"]
    assert any(c.startswith("ecufl sim scenarios/quickstart.toml") for c in cmds)
    assert any(c.startswith("FLWR_HOME=.fleet/flwr-home flwr run .") for c in cmds)


def help_paths() -> list[list[str]]:
    from ecufl.cli import _extend, cli

    _extend()

    def walk(cmd: click.Command, path: list[str]):
        yield path
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])

    return list(walk(cli, []))


class Session:
    """Commands run one after another in the clone, as a user at a shell would."""

    def __init__(self, clone: Path, env: dict[str, str]) -> None:
        self.clone, self.env = clone, env
        self.last_run: str | None = None
        self.ran: list[str] = []

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT) -> str:
        if "results/<run>" in command:
            assert self.last_run, f"{command!r}: no run printed its folder before"
            command = command.replace("results/<run>", self.last_run)
        proc = subprocess.run(["bash", "-c", command], cwd=self.clone, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        out = proc.stdout + proc.stderr
        where = f"`{command}` (exit {proc.returncode}):\n{proc.stdout[-2500:]}\n{proc.stderr[-2500:]}"
        assert proc.returncode == 0, where
        assert TRACEBACK not in out, where
        for m in re.finditer(r"^results:\s+(\S+)", proc.stdout, re.M):
            path = Path(m.group(1))
            self.last_run = str(path.relative_to(self.clone)) if path.is_relative_to(self.clone) else str(path)
        self.ran.append(command)
        return proc.stdout


@pytest.fixture(scope="module")
def session(tmp_path_factory, mnist_dir):
    clone = tmp_path_factory.mktemp("readme") / "ecufl"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=300)
    # the work tree of this checkout (CI: a clean clone of main; here: what is being tested)
    for rel in subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.split():
        if (ROOT / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, clone / rel)
    (clone / ".venv").symlink_to(ROOT / ".venv")  # the installed ecufl, as `./bootstrap` leaves it
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECUFL_") and k != "FLWR_HOME"}
    env["ECUFL_DATA"] = str(mnist_dir)
    env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    s = Session(clone, env)
    yield s
    subprocess.run(["bash", "-c", "ecufl fleet down"], cwd=clone, env=env, capture_output=True, timeout=120)


def test_the_readme_runs_as_typed(session):
    commands = [c for c in readme_commands((ROOT / "README.md").read_text()) if not c.startswith("./bootstrap ")]
    assert len(commands) > 20
    for command in commands:
        session.run(command)
    # what the commands left behind is where the README says, relative to the root
    assert (session.clone / "results").is_dir() and (session.clone / "a.npz").is_file()


def commands_shown(text: str, top: set[str]) -> list[str]:
    """The commands a help text shows: in backticks, or as example lines of their own (indented,
    starting with ``ecufl <command>``); prose that a wrap happens to start with "ecufl" is not one."""
    shown = [re.sub(r"\s+", " ", m).strip() for m in re.findall(r"`(ecufl [^`]*)`", text)]
    for line in text.splitlines():
        words = line.split()
        if line.startswith("  ") and len(words) >= 2 and words[0] == "ecufl" and words[1] in top:
            shown.append(" ".join(words))
    return shown


def test_every_help_and_every_command_a_help_shows_runs(session):
    paths = help_paths()
    top = {p[0] for p in paths if p}
    shown: list[str] = []
    for path in paths:
        text = session.run(" ".join(["ecufl", *path, "--help"]), timeout=120)
        assert text.startswith("Usage: ecufl"), text[:200]
        shown += commands_shown(text, top)
    assert len(paths) > 30
    for command in dict.fromkeys(shown):  # each once, in the order first shown
        if command not in session.ran:
            session.run(command)
