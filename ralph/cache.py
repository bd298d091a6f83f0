"""The response cache: content-addressed answers in diskcache, so nothing is paid for twice.

The key is a hash of exactly what decides the answer (provider, base_url, model, params,
system, rendered prompt) and never of credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from ralph.errors import OutputError
from ralph.fastjson import dumps, loads
from ralph.providers.base import Request, Response
from ralph.recipe.build import thaw
from ralph.recipe.model import Agent

CACHE_DIR_ENV = "RALPH_CACHE_DIR"
PRELOAD_KEYS = 200_000
PRELOAD_BYTES = 64 * 2**20


def default_cache_dir(recipe_path: Path) -> Path:
    override = os.environ.get(CACHE_DIR_ENV)
    return Path(override) if override else recipe_path.resolve().parent / ".ralph" / "cache"


def key_parts(agent: Agent, request: Request) -> dict[str, Any]:
    """Everything that goes into an item's key, in the order `cache explain` shows it."""
    parts: dict[str, Any] = {
        "provider": agent.provider,
        "base_url": agent.base_url,
        "model": request.model,
        "params": thaw(request.params),
        "system": request.system,
        "prompt": request.prompt,
    }
    if agent.provider == "command":
        parts["command"] = agent.command
        parts["workdir"] = str(agent.workdir)
    return parts


def short_key(key: str) -> str:
    """The key as logs, JSONL lines and plans show it."""
    return key[:12]


def cache_key(agent: Agent, request: Request) -> str:
    """SHA-256 of the canonical JSON (sorted keys) of `key_parts`: the definition of a key."""
    canonical = json.dumps(key_parts(agent, request), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json_string(text: str | None) -> str:
    # what json.dumps(ensure_ascii=False) makes of a string, without building an encoder
    return "null" if text is None else encode_basestring(text)


class KeyMaker:
    """`cache_key` for one agent's requests, ~1 µs a key instead of ~4 on the hot path.

    Everything but the prompt and the system text comes from the agent, so that part of the
    canonical JSON is serialised and hashed once; a request whose model or params are not the
    agent's takes the full `cache_key`.
    """

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        nonce = uuid.uuid4().hex  # stand-ins that cannot occur in the agent's own values
        prompt, system = f"prompt-{nonce}", f"system-{nonce}"
        stand_in = Request(prompt=prompt, system=system, model=agent.model, params=agent.params)
        canonical = json.dumps(key_parts(agent, stand_in), sort_keys=True, ensure_ascii=False)
        head, rest = canonical.split(f'"{prompt}"')  # "prompt" sorts before "system"
        self._middle, self._tail = rest.split(f'"{system}"')
        self._head = hashlib.sha256(head.encode())

    def key(self, request: Request) -> str:
        agent = self._agent
        if request.params is not agent.params or request.model != agent.model:
            return cache_key(agent, request)
        rest = _json_string(request.prompt) + self._middle + _json_string(request.system)
        rest += self._tail
        digest = self._head.copy()
        digest.update(rest.encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    key: str
    response: Response
    agent: str
    ttl_s: float | None


class CacheError(OutputError):
    """The response cache cannot be read or written: damaged, not permitted, a full disk."""


def holds_cache(directory: Path) -> bool:
    """Whether `directory` holds a response cache (looking makes none)."""
    return (directory / _DATABASE).is_file()


def stored_answer(value: object) -> tuple[Response, str] | None:
    """(answer, agent) from what ralph stores, `[text, input_tokens, output_tokens, agent]`
    as JSON; anything else (written by another program, or damaged) is a miss, which the run
    then replaces."""
    if not isinstance(value, str):
        return None
    try:
        data = loads(value)
    except ValueError:
        return None
    if type(data) is not list or len(data) != 4:
        return None
    text, input_tokens, output_tokens, agent = data
    # exact types (JSON makes no subclasses; `type(...) is int` also keeps out booleans), on
    # every cache hit
    if type(text) is not str or type(agent) is not str:
        return None
    if type(input_tokens) is not int or type(output_tokens) is not int:
        return None
    if input_tokens < 0 or output_tokens < 0:
        return None
    return Response(text, input_tokens, output_tokens), agent


_DATABASE = "cache.db"  # diskcache's (diskcache.core.DBNAME), named here to look without it


class ResponseCache:
    """A diskcache.Cache of answers; writes are batched into one transaction per flush."""

    def __init__(self, directory: Path, *, preload: bool = False) -> None:
        """`preload`: read the stored answers too, for a run that will look many of them up
        (`cache stats`, `clear` and `explain` do not)."""
        import diskcache

        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        with self._damage("read"):
            # cull_limit=0: diskcache would look for expired entries on every set; once per
            # run, here, is enough (measured: ~2 µs an item on the hot path)
            self._cache = diskcache.Cache(
                str(directory), eviction_policy="none", size_limit=2**40, cull_limit=0
            )
            self._cache.expire()
        # Without `preload` (`cache stats`, `clear`), every look-up asks the database.
        self._known: set[str] | None = None
        self._values: dict[str, tuple[str, float | None]] = {}
        self._held: dict[str, Entry] = {}
        if preload and len(self._cache) <= PRELOAD_KEYS:
            self._preload()

    @contextlib.contextmanager
    def _damage(self, doing: str) -> Iterator[None]:
        """SQLite's errors (a damaged database, no permission, a full disk) as CacheError."""
        try:
            yield
        except sqlite3.Error as exc:
            raise CacheError(
                f"cannot {doing} the cache {self.directory}: {exc} (delete the folder to "
                "start an empty cache, or run with --no-cache)"
            ) from None

    def _preload(self) -> None:
        """The keys held when the run starts, and the answers stored in the database itself
        (all but the longest), in one query while the cache is small: a miss, the common case
        on a first run, then costs a set look-up, and a hit a dict look-up, not diskcache's
        ~5 µs query, which was a third of a cached item. Best effort: it reads diskcache's
        table directly, so any surprise there (a newer schema) leaves both empty, and every
        look-up asks diskcache."""
        import diskcache.core

        values = self._cache.volume() <= PRELOAD_BYTES
        path = Path(self._cache.directory, diskcache.core.DBNAME)
        try:
            with contextlib.closing(sqlite3.connect(path)) as db:
                # keys ralph writes are text, stored raw: other keys can never be looked up
                rows = db.execute(
                    "SELECT key, CASE WHEN ? AND mode = ? AND typeof(value) = 'text'"
                    " THEN value END, expire_time FROM Cache"
                    " WHERE raw = 1 AND typeof(key) = 'text'"
                    " AND (expire_time IS NULL OR expire_time > ?)",
                    (values, diskcache.core.MODE_RAW, time.time()),
                ).fetchall()
        except sqlite3.Error:
            return
        self._known = {key for key, _, _ in rows}
        self._values = {key: (value, expires) for key, value, expires in rows if value is not None}

    def get(self, key: str) -> tuple[Response, str] | None:
        held = self._held.get(key)
        if held is not None:
            return held.response, held.agent
        if self._known is not None and key not in self._known:
            return None
        preloaded = self._values.get(key)
        if preloaded is not None and (preloaded[1] is None or preloaded[1] > time.time()):
            value: object = preloaded[0]
        else:
            try:
                value = self._cache.get(key)
            except (sqlite3.Error, OSError, UnicodeError):  # a damaged entry: asked again
                return None
        return stored_answer(value)

    def __contains__(self, key: str) -> bool:
        return key in self._cache

    def hold(self, entry: Entry) -> None:
        """An answer this run just got, served from memory until `put_many` writes it: an
        item that asks the same in the meantime is a hit, and does not pay for it again."""
        self._held[entry.key] = entry

    def put_many(self, entries: Iterable[Entry]) -> None:
        """Store the entries, in one transaction, and let go of the ones held."""
        entries = list(entries)
        with self._damage("write"), self._cache.transact():
            for entry in entries:
                # a JSON string is stored as text, not pickled: cheaper, and readable
                response = entry.response
                value = dumps(
                    [response.text, response.input_tokens, response.output_tokens, entry.agent]
                )
                self._cache.set(entry.key, value, expire=entry.ttl_s)
                self._values.pop(entry.key, None)
                if self._known is not None:
                    self._known.add(entry.key)
        for entry in entries:
            self._held.pop(entry.key, None)

    def stats(self) -> dict[str, Any]:
        with self._damage("read"):
            self._cache.expire()  # entries past their ttl are dead: neither count nor size them
            return {
                "directory": str(self.directory),
                "entries": len(self._cache),
                "size_bytes": self._cache.volume(),
            }

    def clear(self) -> int:
        if self._known is not None:
            self._known.clear()
        self._values.clear()
        self._held.clear()
        with self._damage("clear"):
            return int(self._cache.clear())

    def close(self) -> None:
        self._cache.close()


_MODE_TEXT_FILE = 3  # diskcache keeps long strings in a file beside the database


class CachePeek:
    """Read-only look-ups in the response cache: a dry run or `cache explain` must not write,
    not even SQLite's bookkeeping, so this reads diskcache's database directly instead of
    through diskcache."""

    def __init__(self, directory: Path | None) -> None:
        self._db: sqlite3.Connection | None = None
        self._directory = directory or Path()
        database = directory / _DATABASE if directory is not None else None
        if database is None or not database.is_file():
            return
        # immutable: even a read-only open of a WAL database creates its -shm and -wal files.
        # The price: answers a killed run left in an uncheckpointed WAL count as misses.
        try:
            uri = f"{database.resolve().as_uri()}?mode=ro&immutable=1"  # as_uri: '#', '?' escaped
            self._db = sqlite3.connect(uri, uri=True)
            self._db.execute("SELECT 1 FROM Cache LIMIT 1")
        except sqlite3.Error:
            self._db = None

    def answer(self, key: str) -> str | None:
        """The cached answer text under `key`, if it is there and not expired."""
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1"
                " AND (expire_time IS NULL OR expire_time > ?)",
                (key, time.time()),
            ).fetchone()
        except sqlite3.Error:  # a damaged database: a run refuses it, a plan sees nothing
            return None
        if row is None:
            return None
        mode, filename, value = row
        if mode == _MODE_TEXT_FILE and filename:
            try:
                value = (self._directory / filename).read_text("utf-8")
            except (OSError, UnicodeError):  # a damaged cache: the run asks again, as here
                return None
        found = stored_answer(value)  # what a run would take for a hit, and nothing else
        return found[0].text if found is not None else None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
