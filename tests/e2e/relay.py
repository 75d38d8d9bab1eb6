"""A relay from a Unix socket to a TCP address (helpers, no tests): the test process
lives in the machine's own network namespace and cannot reach a replica on an emulated
machine (tests/netkit.py), so one relay runs *inside* each replica's namespace and the
test talks HTTP to the replica through the socket file (files are shared by every
namespace). It reaches the replica however the replica's links are cut.

    python -m tests.e2e.relay /tmp/x/s1-t1.sock 10.77.1.11 8080
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

__all__ = ["main"]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def _serve(path: str, host: str, port: int) -> None:
    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            target_r, target_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, target_w), _pipe(target_r, client_w))

    server = await asyncio.start_unix_server(relay, path)
    print("ready", flush=True)  # the parent waits for this line
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    path, host, port = argv
    asyncio.run(_serve(path, host, int(port)))


if __name__ == "__main__":
    main(sys.argv[1:])
