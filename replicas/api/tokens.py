"""API tokens of one replica: who may call its HTTP API, in which role.

Each device that talks to a till (its own POS front end, a store tablet, an
integrator's system, HQ's BI tool) gets a token of its own, issued and revoked with
`tillmesh token`. A token may instead be a person's (`person`: a cashier or manager
id): everything it writes is then that person's (`auth.person_of`). Only a hash is
stored (`api-tokens.json` in the replica's data folder, 0600); the token itself is
shown once, when issued. Tokens are random, so a plain SHA-256 is enough (nothing to
brute-force), compared in constant time.

    store = TokenStore(data_dir / TOKENS_FILE)
    token = store.issue("front-end t1", "cashier")   # "tm_<id>_<secret>", shown once
    store.issue("Ann's badge", "manager", person="M007")
    store.verify(token)                               # -> TokenRecord or None
    store.revoke(record.id)

The file is re-read when it changes, so a token revoked with the CLI stops working at
the running replica's next request.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path

from pydantic import BaseModel

from broker.files import write_private
from core.errors import StorageError
from core.pan import contains_card_number, control_character

__all__ = ["TOKENS_FILE", "Role", "TokenRecord", "TokenStore", "check_name", "check_person"]

TOKENS_FILE = "api-tokens.json"


class Role(IntEnum):
    """Each role may do what the ones below it may (see `auth.POLICY`)."""

    read_only = 1  # reports, status, lookups
    cashier = 2  # sell at catalog prices, void, open a shift, take deliveries
    manager = 3  # refunds, price overrides, stock fixes, shift close, conflicts, HQ link
    hq_admin = 4  # the catalog and everything else

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"no role {name!r}; roles: {', '.join(r.name for r in cls)}") from None


class TokenRecord(BaseModel):
    id: str
    name: str
    role: str
    sha256: str
    issued_at: str
    person: str = ""  # the person it is bound to; "" for a device's token

    @property
    def level(self) -> Role:
        return Role[self.role]

    @property
    def label(self) -> str:
        """How events name this credential: "M007 (token 3f9a2c1b)". The id makes it
        unambiguous: names are free text, and two tokens may share one."""
        return f"{self.person or self.name} (token {self.id})"


class _File(BaseModel):
    tokens: list[TokenRecord] = []


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: tuple[float, _File] | None = None

    def records(self) -> list[TokenRecord]:
        return list(self._read().tokens)

    def issue(self, name: str, role: str, person: str = "") -> str:
        """A new token for `name` in `role`, bound to `person` if given; the only time
        the token is seen. Name and person end up in events (who sold, who approved an
        override): the event text rules apply to both."""
        level = Role.parse(role)
        check_name(name)
        if person:
            check_person(person)
        token_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
        record = TokenRecord(
            id=token_id,
            name=name,
            role=level.name,
            sha256=_digest(secret),
            issued_at=datetime.now(UTC).isoformat(timespec="seconds"),
            person=person,
        )
        with self._locked():
            data = self._read()
            self._write(_File(tokens=[*data.tokens, record]))
        return f"tm_{token_id}_{secret}"

    def revoke(self, token_id: str) -> TokenRecord:
        with self._locked():
            data = self._read()
            gone = [t for t in data.tokens if t.id == token_id]
            if not gone:
                detail = f"no token {token_id!r} (see `tillmesh token list`)"
                raise StorageError(str(self.path), detail)
            self._write(_File(tokens=[t for t in data.tokens if t.id != token_id]))
        return gone[0]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time: two `token issue` at once would lose one token."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._cache = None
            yield
        finally:
            os.close(fd)

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a valid token, else None."""
        prefix, _, rest = token.partition("_")
        token_id, _, secret = rest.partition("_")
        if prefix != "tm" or not token_id or not secret:
            return None
        for record in self._read().tokens:
            if record.id == token_id and hmac.compare_digest(record.sha256, _digest(secret)):
                return record
        return None

    def _read(self) -> _File:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return _File()
        if self._cache is None or self._cache[0] != mtime:
            try:
                self._cache = (mtime, _File.model_validate(json.loads(self.path.read_text())))
            except (OSError, ValueError) as e:
                raise StorageError(str(self.path), f"unreadable token file: {e}") from e
        return self._cache[1]

    def _write(self, data: _File) -> None:
        staged = self.path.with_name(self.path.name + ".new")  # a reader never sees half
        write_private(staged, (data.model_dump_json(indent=2) + "\n").encode())
        staged.replace(self.path)  # under the lock: the staging name is ours
        self._cache = None


def check_name(name: str, what: str = "a token's name") -> None:
    """ValueError unless `name` suits a token: 1-80 characters of plain text."""
    if not 1 <= len(name) <= 80:
        raise ValueError(f"{what} is 1-80 characters")
    if contains_card_number(name) or control_character(name) is not None:
        raise ValueError(f"{what} may hold no card number and no control character")


def check_person(person: str) -> None:
    """ValueError unless `person` suits a person's id (C042): the rules of a name, and
    no blanks at either end (a request naming " C042" would not be C042's)."""
    check_name(person, "a person's id")
    if person != person.strip():
        raise ValueError("a person's id has no blanks at either end")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
