"""Bulk import of device credentials: lines in, a CSV report out, both streamed.

Request lines: `device_id,secret`, or `device_id` alone for a generated secret; blank lines
and lines starting with `#` are skipped; fields are trimmed. Each good line is applied
whole or not at all (a device that already has credentials is left alone and reported);
a bad line is reported with its number and never stops the import.

The report is CSV with the header `line,device_id,secret,error`: one row per generated
secret (the only time it is shown), one per refused line (`code: message`), then a last
line `# registered N, generated G, refused R`. A failure of Redis ends the report with
`# aborted after line N: ...` instead: every line up to N was applied or refused, and the
batch being sent may or may not have been. Sending the same file again is safe: devices
already registered are reported `already_registered` and left alone (a generated secret
lost that way needs a rotate).

Lines go to Redis `CHUNK` at a time, one script call each, so a million lines take one
thousand round trips.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import redis.asyncio
from redis.exceptions import RedisError

from scheduler.credentials import Credentials, ImportEntry, check_device, check_secret
from scheduler.errors import SchedulerError, ValidationError
from scheduler.secretbox import CredentialKeys, SecretBox

CHUNK = 1000
MAX_LINE_BYTES = 1024
HEADER = b"line,device_id,secret,error\n"


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    device_id: str
    code: str
    message: str


class LineSplitter:
    """Bytes in, (line number, line) out; a line over `MAX_LINE_BYTES` comes out as None
    (its bytes are dropped as they arrive, so a line without an end cannot fill memory)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overlong = False
        self._number = 0

    def _line(self, raw: bytes) -> tuple[int, bytes | None]:
        self._number += 1
        overlong = self._overlong or len(raw) > MAX_LINE_BYTES
        self._overlong = False
        return self._number, None if overlong else raw

    def feed(self, chunk: bytes) -> list[tuple[int, bytes | None]]:
        self._buffer += chunk
        *complete, rest = self._buffer.split(b"\n")
        out = [self._line(bytes(raw)) for raw in complete]
        if len(rest) > MAX_LINE_BYTES:
            self._overlong, rest = True, bytearray()
        self._buffer = bytearray(rest)
        return out

    def end(self) -> list[tuple[int, bytes | None]]:
        if not self._buffer and not self._overlong:
            return []
        last = bytes(self._buffer)
        self._buffer = bytearray()
        return [self._line(last)]


def parse_line(number: int, raw: bytes | None) -> ImportEntry | LineError | None:
    """One request line as an entry, an error, or None (blank or a comment)."""
    if raw is None:
        return LineError(number, "", "line_too_long", f"line is over {MAX_LINE_BYTES} bytes")
    try:
        text = raw.decode().strip()
    except UnicodeDecodeError:
        return LineError(number, "", "bad_line", "line is not UTF-8")
    if not text or text.startswith("#"):
        return None
    fields = [f.strip() for f in text.split(",")]
    device_id = fields[0]
    if len(fields) > 2:
        return LineError(number, device_id, "bad_line", "use device_id or device_id,secret")
    try:
        check_device(device_id)
        secret = check_secret(fields[1]) if len(fields) == 2 else None
    except ValidationError as exc:
        return LineError(number, device_id, exc.code, exc.message)
    return ImportEntry(number, device_id, secret)


Row = tuple[int, str, str, str]  # line, device id, secret, error


def _csv(rows: list[Row]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(sorted(rows))
    return out.getvalue().encode()


class Import:
    """One import's progress: entries waiting for Redis, refused lines, totals."""

    def __init__(self, credentials: Credentials, emit: Callable[[bytes], None]) -> None:
        self._credentials, self._emit = credentials, emit
        self._pending: list[ImportEntry] = []
        self._errors: list[LineError] = []
        self.registered = self.generated = self.refused = 0
        self.applied_through = 0  # every line up to this one was applied or refused
        self._taken = 0

    def take(self, lines: list[tuple[int, bytes | None]]) -> None:
        for number, raw in lines:
            self._taken = number
            parsed = parse_line(number, raw)
            if isinstance(parsed, ImportEntry):
                self._pending.append(parsed)
            elif parsed is not None:
                self._errors.append(parsed)

    @property
    def full(self) -> bool:
        return len(self._pending) >= CHUNK or len(self._errors) >= CHUNK

    async def flush(self) -> None:
        rows: list[Row] = []
        for start in range(0, len(self._pending), CHUNK):
            batch = self._pending[start : start + CHUNK]
            stored = await self._credentials.import_batch(batch)
            for entry, secret in zip(batch, stored, strict=True):
                if secret is None:
                    self._errors.append(
                        LineError(
                            entry.line,
                            entry.device_id,
                            "already_registered",
                            "the device already has credentials; nothing changed",
                        )
                    )
                    continue
                self.registered += 1
                if entry.secret is None:
                    self.generated += 1
                    rows.append((entry.line, entry.device_id, secret, ""))
            self.applied_through = batch[-1].line
        self.refused += len(self._errors)
        rows += [(e.line, e.device_id, "", f"{e.code}: {e.message}") for e in self._errors]
        self.applied_through = self._taken
        self._pending.clear()
        self._errors.clear()
        if rows:
            self._emit(_csv(rows))

    def summary(self) -> bytes:
        return (
            f"# registered {self.registered}, generated {self.generated}, refused {self.refused}\n"
        ).encode()


async def run_import(
    credentials: Credentials, body: AsyncIterator[bytes], emit: Callable[[bytes], None]
) -> None:
    """Read the whole body, applying and reporting as it goes (see the module docstring).
    `emit` must not block: the report is written while the body is still being read.
    A Redis failure ends the report with an `# aborted` line and re-raises."""
    emit(HEADER)
    splitter = LineSplitter()
    job = Import(credentials, emit)
    try:
        async for chunk in body:
            job.take(splitter.feed(chunk))
            if job.full:
                await job.flush()
        job.take(splitter.end())
        await job.flush()
    except (RedisError, SchedulerError) as exc:
        # The status line went out long ago: the report's last line says what happened.
        emit(f"# aborted after line {job.applied_through}: {exc}\n".encode())
        raise
    emit(job.summary())


async def import_pairs(
    redis_url: str, keys: CredentialKeys, pairs: Iterable[tuple[str, str]]
) -> int:
    """Registers (device id, secret) pairs straight into the store at `redis_url`, CHUNK at
    a time, for tools that run without a scheduler (simulated fleets in tests and
    benchmarks); devices already registered are left alone. How many were stored."""
    client: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(redis_url)
    store = Credentials(client, SecretBox(keys), [])
    stored = 0
    try:
        batch: list[ImportEntry] = []
        for number, (device_id, secret) in enumerate(pairs, 1):
            batch.append(ImportEntry(number, check_device(device_id), check_secret(secret)))
            if len(batch) == CHUNK:
                stored += sum(s is not None for s in await store.import_batch(batch))
                batch = []
        if batch:
            stored += sum(s is not None for s in await store.import_batch(batch))
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
    return stored
