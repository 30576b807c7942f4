"""The command line's surface: choices the help lists and completion offers, readable metavars, --version."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from edgec import api, cli, manifest
from edgec.passes.partition.global_partition import STRATEGY_NAMES

runner = CliRunner()
WIDE = {"COLUMNS": "220", "TERM": "dumb", "NO_COLOR": "1"}
COMMANDS = ["compile", "verify", "inspect", "report", "profile", "schema", "serve", "run", "keys"]


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(cli.app, list(args), env={**WIDE, **(env or {})}, prog_name="edgec")


def test_the_choices_are_the_ones_the_library_accepts():
    assert [o.value for o in cli.Objective] == list(manifest.OBJECTIVES)
    assert set(manifest.OBJECTIVES) == set(api.OBJECTIVES)
    assert set(cli.STRATEGIES) == set(STRATEGY_NAMES) | {"spatial"}, "edgec.cli.STRATEGIES must list the partitioner's strategies and spatial"
    defaults = inspect.signature(api.compile).parameters
    options = {p.name: p.default.default for p in inspect.signature(cli.compile_cmd).parameters.values()}
    assert options["objective"] == defaults["objective"].default and options["strategy"] == defaults["strategy"].default


def test_compile_help_lists_every_choice():
    out = invoke("compile", "--help").output
    assert f"<{'|'.join(o.value for o in cli.Objective)}>" in out
    assert f"<{'|'.join(cli.STRATEGIES)}>" in out


@pytest.mark.parametrize("option, values", [("--objective", manifest.OBJECTIVES), ("--strategy", cli.STRATEGIES)])
def test_shell_completion_offers_the_choices(option, values):
    env = {"_EDGEC_COMPLETE": "complete_bash", "COMP_WORDS": f"edgec compile {option} ", "COMP_CWORD": "3"}
    result = invoke(env=env)
    assert result.exit_code == 0 and result.output.split() == list(values)
    env["COMP_WORDS"], env["COMP_CWORD"] = "edgec compile --obj", "2"
    assert "--objective" in invoke(env=env).output.split()


def test_a_value_not_among_the_choices_is_refused_naming_them():
    result = invoke("compile", "m.onnx", "-t", "c.json", "-o", "out", "--strategy", "fastest")
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert "fastest" in text and all(f"'{s}'" in text for s in cli.STRATEGIES)


@pytest.mark.parametrize("command", COMMANDS)
def test_no_help_shows_a_python_type_as_metavar(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    rows = [line for line in result.output.splitlines() if re.search(r"│ +(\* +)?--", line) and "--help" not in line]
    assert rows or command in ("inspect", "schema")
    for bad in ("<list[", "<str>", "<int>", "<float>", "<bool>", "<path>"):
        assert not any(bad in row for row in rows), (command, bad, [r for r in rows if bad in r])


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"edgec {version('edgec')}"
    assert re.fullmatch(r"edgec \d+\.\d+\.\d+\S*", result.output.strip())
