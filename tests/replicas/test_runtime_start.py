"""A replica that cannot start its nats-server says so and exits; it does not hang."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from replicas.site import init_site

ROOT = Path(__file__).resolve().parents[2]


def test_taken_port_is_a_clear_error_and_the_process_exits(tmp_path):
    site = init_site(tmp_path, {"s1": ["t1"]})
    with socket.socket() as squatter:
        squatter.bind((site.host, site.ports["s1/t1"].nats))
        squatter.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "replicas.cli.main", "till", "--data", str(tmp_path),
             "--store", "s1", "--till", "t1", "--fresh"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("tillmesh: error:") and "Traceback" not in proc.stderr
