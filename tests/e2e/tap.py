"""A TCP relay that keeps a copy of every byte it carries (helpers, no tests): put on a
store's uplink, it is what an attacker on that link sees.

    python -m tests.e2e.tap 10.77.101.200 7422 10.77.101.11 7422 /tmp/x/tap.bin
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import BinaryIO

__all__ = ["main"]


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, copy: BinaryIO) -> None:
    try:
        while data := await r.read(65536):
            copy.write(data)
            copy.flush()
            w.write(data)
            await w.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            w.close()


async def _serve(listen: str, port: int, host: str, target: int, record: str) -> None:
    copy = open(record, "ab")  # noqa: SIM115  # open for the process's life

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            target_r, target_w = await asyncio.open_connection(host, target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, target_w, copy), _pipe(target_r, client_w, copy))

    server = await asyncio.start_server(relay, listen, port)
    print("ready", flush=True)  # the parent waits for this line
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    listen, port, host, target, record = argv
    asyncio.run(_serve(listen, int(port), host, int(target), record))


if __name__ == "__main__":
    main(sys.argv[1:])
