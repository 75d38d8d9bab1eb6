"""A relay from a Unix socket to a TCP address, run inside a machine of the lab: a process
in the machine's own network namespace (the demo, a test) cannot reach a replica on an
emulated machine, so one relay runs *inside* each replica's namespace and the caller talks
HTTP to the replica through the socket file (files are shared by every namespace). It
reaches the replica however the replica's links are cut.

Standard library only, so it starts as a bare script (`command`), without the package's
imports (a relay per replica starts in milliseconds, not seconds):

    python -I -S .../netlab/relay.py /tmp/x/s1-t1.sock 10.77.1.11 8080
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

__all__ = ["READY", "command"]

READY = "ready"  # its first line, once the socket listens


def command(socket_path: str, host: str, port: int) -> list[str]:
    """The command line of a relay from `socket_path` to `host`:`port`."""
    return [sys.executable, "-I", "-S", __file__, socket_path, host, str(port)]


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
    print(READY, flush=True)  # the parent waits for this line
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    path, host, port = argv
    asyncio.run(_serve(path, host, int(port)))


if __name__ == "__main__":
    main(sys.argv[1:])
