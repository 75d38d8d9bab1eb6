"""What an attacker on a store's network tries, as a program run inside an emulated
machine (helpers, no tests; tests/e2e/test_e2e_attacks.py runs it with `host.popen`).
Each command prints one line saying what happened.

    python -m tests.e2e.attacker plain HOST PORT          # speak NATS without TLS
    python -m tests.e2e.attacker publish URL SEED|- SUBJECT   # publish as someone
    python -m tests.e2e.attacker listen URL SEED SUBJECT SECONDS  # count what arrives
"""

from __future__ import annotations

import asyncio
import socket
import sys

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = ["main"]


def plain(host: str, port: int) -> str:
    """Connect without TLS and ask for a PONG; what the server answered."""
    try:
        sock = socket.create_connection((host, port), 3)
    except OSError as e:
        return f"no connection: {e}"
    sock.settimeout(3)
    got = b""
    try:
        sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        while b"PONG" not in got and len(got) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    except OSError as e:
        got += f" [{type(e).__name__}]".encode()
    finally:
        sock.close()
    return "PONG" if b"PONG" in got else f"no PONG: {got[-200:]!r}"


async def _connect(url: str, seed: str, errors: list[str]) -> Client:
    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    options = {} if seed == "-" else {"nkeys_seed": seed}
    return await nats.connect(
        url, allow_reconnect=False, connect_timeout=3, error_cb=on_error, **options
    )


async def publish(url: str, seed: str, subject: str) -> str:
    errors: list[str] = []
    try:
        nc = await _connect(url, seed, errors)
    except Exception as e:  # what the server said, whatever nats-py calls it
        return f"connect refused: {e}"
    await nc.publish(subject, b"forged")
    await nc.flush(timeout=3)
    await asyncio.sleep(0.5)  # the server's -ERR for a violation comes back async
    await nc.close()
    return f"errors: {errors}" if errors else "published"


async def listen(url: str, seed: str, subject: str, seconds: float) -> str:
    """Subscribe for `seconds` (the server may be starting: retried for 10 s first)."""
    errors: list[str] = []
    for _ in range(20):
        try:
            nc = await _connect(url, seed, errors)
            break
        except Exception:  # not up yet
            await asyncio.sleep(0.5)
    else:
        return f"could not connect to {url}: {errors}"
    got: list[str] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg.subject + (" FORGED" if msg.data == b"forged" else ""))

    await nc.subscribe(subject, cb=on_msg)
    await asyncio.sleep(seconds)
    await nc.close()
    return f"received {len(got)} {sorted(set(got))} errors {errors}"


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "plain":
        print(plain(args[0], int(args[1])), flush=True)
    elif command == "publish":
        print(asyncio.run(publish(*args)), flush=True)
    elif command == "listen":
        print(asyncio.run(listen(args[0], args[1], args[2], float(args[3]))), flush=True)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
