"""schemathesis against the till's and HQ's OpenAPI specs, on real servers: every
operation, generated valid and invalid input, every check schemathesis has (no 5xx,
responses match the spec, status codes documented, invalid input refused, ...) but one:
`positive_data_acceptance` expects every schema-valid request to succeed, and the
API's cross-field rules (a card payment needs its token, payments must add up to the
total, a SKU must exist) cannot be written in OpenAPI, so they answer 422 or 404.
Bounded examples and a derandomized seed keep it in `make test`.

(schemathesis' own pytest plugin does not run under pytest 9 yet: each operation is a
parametrized test driving the operation's hypothesis strategy directly.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from replicas.api.app import create_app
from tests.replicas.api_kit import SpecOnly
from tests.replicas.server_kit import TillServer

REPLICAS = ("s1/t1", "hq")
EXAMPLES = 25


def _schema(replica_id: str) -> Any:
    return schemathesis.openapi.from_dict(create_app(SpecOnly(replica_id)).openapi())  # type: ignore[arg-type]


OPERATIONS = [
    (rid, op.label)
    for rid in REPLICAS
    for op in (r.ok() for r in _schema(rid).get_all_operations())
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TillServer]]:
    running: dict[str, TillServer] = {}
    try:
        for rid in REPLICAS:
            running[rid] = TillServer(tmp_path_factory.mktemp("fuzz") / "log.db", rid)
            running[rid].start()
        yield running
    finally:
        for server in running.values():
            server.stop()


@pytest.mark.parametrize(
    ("replica_id", "label"), OPERATIONS, ids=[f"{r} {o}" for r, o in OPERATIONS]
)
def test_no_input_breaks_the_api(
    servers: dict[str, TillServer], replica_id: str, label: str
) -> None:
    operation = _schema(replica_id).find_operation_by_label(label)
    base_url = servers[replica_id].url

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, excluded_checks=[positive_data_acceptance])

    run()
