"""HQ on PostgreSQL as real processes: `tillmesh hq --db DSN --shard K/N` in a `Mesh`."""

from __future__ import annotations

from broker.config import free_port
from tests.e2e.harness import Mesh, ReplicaProc, wait_until

__all__ = ["WorkerProc"]


class WorkerProc(ReplicaProc):
    """`tillmesh hq --db DSN --shard K/N`; worker 0 serves HQ's API, the others health
    and metrics at `--listen`."""

    def __init__(self, mesh: Mesh, dsn: str, index: int, count: int) -> None:
        super().__init__(mesh, "hq")
        self.dsn, self.shard = dsn, f"{index}/{count}"
        self.out = mesh.logs / f"hq-{index}-of-{count}.log"
        self.listen: list[str] = []
        if index:  # its own folder: worker 0's nats-server is not its child
            self.data_dir = self.data_dir / "workers" / f"{index}-of-{count}"
            port = free_port("127.0.0.1")
            self.listen, self.url = ["--listen", f"127.0.0.1:{port}"], f"http://127.0.0.1:{port}"

    def command(self, fresh: bool) -> list[str]:
        db = ["--db", self.dsn, "--shard", self.shard, *self.listen]
        return [*self.mesh.tillmesh, "hq", "--data", str(self.root), *db, "--fresh"]

    async def wait_serving(self, timeout: float = 60.0) -> None:
        word = "serving on" if self.shard.startswith("0/") else f"ingest worker {self.shard} up"

        async def up() -> bool:
            if not self.running:
                raise AssertionError(f"worker {self.shard} exited early:\n{self.tail()}")
            return word.encode() in self.out.read_bytes()[self._out_from :]

        await wait_until(up, f"HQ worker {self.shard} to start", timeout)
