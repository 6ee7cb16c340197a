"""The `aid` command line: every stage is reachable and documented."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aid.cli import COMMAND_MODULES, build_parser


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_help_lists_every_stage() -> None:
    out = subprocess.run([sys.executable, "-m", "aid.cli", "--help"], capture_output=True, text=True, check=True).stdout
    cmds = _subcommands()
    # One subcommand (at least) per stage module, all named in the top-level help.
    assert len(cmds) >= len(COMMAND_MODULES)
    for cmd in cmds:
        assert cmd in out


@pytest.mark.parametrize("cmd", _subcommands())
def test_each_subcommand_has_help(cmd: str) -> None:
    res = subprocess.run([sys.executable, "-m", "aid.cli", cmd, "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "usage: aid" in res.stdout
    assert len(res.stdout.splitlines()) > 3
