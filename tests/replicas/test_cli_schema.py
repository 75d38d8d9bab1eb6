"""`tillmesh schema --out`: a place it cannot write is a one-line error, not a traceback."""

from __future__ import annotations

import pytest

from tests.replicas.ops_kit import cli


@pytest.mark.parametrize("out", ["/nonexistent/x.json", "."])
def test_schema_to_an_unwritable_place_is_a_one_line_error(
    out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, err = cli(capsys, "schema", "--out", out)
    assert (code, stdout) == (2, "")
    assert err.startswith(f"tillmesh: error: {out}: ") and err.count("\n") == 1
