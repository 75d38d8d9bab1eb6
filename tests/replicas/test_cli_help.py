"""Every command, at every level, has --help that ends with a runnable-looking example."""

from __future__ import annotations

import pytest

from replicas.cli.main import main
from tests.cli_tree import command_paths

COMMANDS = command_paths()


def test_the_tree_has_the_commands_users_were_promised():
    flat = {" ".join(p) for p in COMMANDS}
    promised = {"till", "hq", "status", "schema", "state", "log verify", "log dump", "log stats"}
    assert promised <= flat


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tillmesh")
def test_help_has_an_example(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out
    example = out.split("example:", 1)[1].strip().splitlines()[0]
    assert example.startswith("tillmesh" + (" " + path[0] if path else ""))


def test_a_missing_database_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["log", "verify", str(tmp_path / "nope.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tillmesh: error:") and "Traceback" not in err
