"""The edge's request handling: route, authorise, find the package, plan the answer.

Synchronous on the hot path: when the package is open already, `answer` returns the
plan at once (with the `Grant` the connection may hand back for its next request); only a cache miss returns `Miss`, and the connection then awaits
`fill` before asking again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from download_edge import metrics as m
from download_edge import ranges, responses
from download_edge import request as rq
from download_edge.auth import Authorizer, DeniedError
from download_edge.cache import FillError, Package, PackageCache, PackageMissingError
from download_edge.progress import ProgressRecorder
from download_edge.ratelimit import DeviceLimiter
from download_edge.responses import Plan
from download_edge.settings import EdgeSettings
from download_edge.writers import SMALL_BODY, WritableWaiter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Grant:
    """A request target and credentials found valid: what they open, and until when.

    A connection keeps its last grant, so a device fetching range after range on one
    connection is routed and authorised by comparing the same strings again; the
    expiry is still compared on every request.
    """

    path: bytes
    authorization: str | None
    query: bytes
    package_sha256: str
    device_id: str
    expires_s: int

    def owner(self, package_size: int) -> tuple[str, str, int]:
        """Whose bytes an answer under this grant writes (`delivery.Owner`)."""
        return (self.device_id, self.package_sha256, package_size)


@dataclass(slots=True)
class Answer:
    plan: Plan
    package: Package | None = None
    device_id: str | None = None
    grant: Grant | None = None


@dataclass(frozen=True, slots=True)
class Miss:
    package_sha256: str


class Edge:
    """Everything a connection needs, shared by all connections of one process."""

    def __init__(
        self,
        settings: EdgeSettings,
        cache: PackageCache,
        recorder: ProgressRecorder | None,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.recorder = recorder
        self.authorizer = Authorizer(settings.common.token_keys)
        self.limiter = (
            DeviceLimiter(settings.rate_limit_bytes_s) if settings.rate_limit_bytes_s else None
        )
        self._waiter: WritableWaiter | None = None

    def waiter(self, loop: asyncio.AbstractEventLoop) -> WritableWaiter:
        """The process's one epoll set for sockets waiting to take more of a body."""
        if self._waiter is None:
            self._waiter = WritableWaiter(loop)
        return self._waiter

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None

    def answer(self, req: rq.Request, now_s: int, grant: Grant | None = None) -> Answer | Miss:
        """The answer to `req`; `grant` is the connection's last one, reused if it fits."""
        keep = req.keep_alive
        method = req.method
        if method != "GET" and method != "HEAD":
            return Answer(
                responses.error(
                    405,
                    "only GET and HEAD",
                    keep_alive=keep,
                    now_s=now_s,
                    extra=(("Allow", "GET, HEAD"),),
                )
            )
        if (
            grant is None
            or now_s >= grant.expires_s  # expired: the full check answers 410
            or grant.path != req.path
            or grant.authorization != req.authorization
            or grant.query != req.query
        ):
            checked = self._grant(req, now_s)
            if isinstance(checked, Answer):
                return checked
            grant = checked
        sha = grant.package_sha256
        package = self.cache.cached(sha)
        if package is None:
            return Miss(sha)
        plan = responses.for_package(
            method=method,
            package_sha256=sha,
            size=package.size,
            range_header=req.range,
            if_range=req.if_range,
            keep_alive=keep,
            now_s=now_s,
            max_ranges=self.settings.max_ranges,
        )
        return Answer(plan, package, grant.device_id, grant)

    def small_range(
        self, grant: Grant, first: int, last: int, now_s: int
    ) -> tuple[Package, bytes, int, int] | None:
        """The common request decided in one step: a keep-alive GET of one small range
        (`bytes=first-last`, no If-Range) of an open package, under the connection's last grant,
        for the same target and credentials. (package, head, first, count), exactly what
        `answer` would plan; None sends the request the general way."""
        if now_s >= grant.expires_s or self.limiter is not None:
            return None
        package = self.cache.cached(grant.package_sha256)
        if package is None:
            return None
        size = package.size
        span = ranges.clamp(first, last, size)
        if span is None:
            return None
        first, last = span
        if last - first >= SMALL_BODY:
            return None
        head = responses.range_head(grant.package_sha256, first, last, size, now_s)
        return package, head, first, last - first + 1

    def _grant(self, req: rq.Request, now_s: int) -> Grant | Answer:
        """Route and authorise `req`: its grant, or the error answer."""
        keep = req.keep_alive
        with_body = req.method != "HEAD"
        sha = rq.package_of(req.path)
        if sha is None:
            return Answer(
                responses.error(404, "not found", keep_alive=keep, now_s=now_s, with_body=with_body)
            )
        try:
            device_id, expires_s = self.authorizer.check(
                rq.token_of(req.authorization, req.query), sha, now_s
            )
        except DeniedError as exc:
            extra = (("WWW-Authenticate", 'Bearer realm="ota"'),) if exc.status == 401 else ()
            return Answer(
                responses.error(
                    exc.status,
                    exc.reason,
                    keep_alive=keep,
                    now_s=now_s,
                    extra=extra,
                    with_body=with_body,
                )
            )
        return Grant(req.path, req.authorization, req.query, sha, device_id, expires_s)

    async def fill(self, package_sha256: str, keep_alive: bool, now_s: int) -> Plan | None:
        """Bring a package into the cache; None when it is ready, else the error to send."""
        try:
            await self.cache.get(package_sha256)
        except PackageMissingError:
            m.fills.labels("missing").inc()
            return responses.error(404, "no such package", keep_alive=keep_alive, now_s=now_s)
        except (FillError, OSError) as exc:
            m.fills.labels("failed").inc()
            log.error(
                "cache fill failed", extra={"package_sha256": package_sha256, "error": str(exc)}
            )
            return responses.error(502, "package unavailable", keep_alive=False, now_s=now_s)
        m.fills.labels("ok").inc()
        return None
