"""The edge's request handling: route, authorise, find the package, plan the answer.

Synchronous on the hot path: when the package is open already, `answer` returns the
plan at once; only a cache miss returns `Miss`, and the connection then awaits
`fill` before asking again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from download_edge import metrics as m
from download_edge import request as rq
from download_edge import responses
from download_edge.auth import Authorizer, DeniedError
from download_edge.cache import FillError, Package, PackageCache, PackageMissingError
from download_edge.progress import ProgressRecorder
from download_edge.ratelimit import DeviceLimiter
from download_edge.responses import Plan
from download_edge.settings import EdgeSettings
from download_edge.writers import WritableWaiter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Answer:
    plan: Plan
    package: Package | None = None
    device_id: str | None = None


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

    def answer(self, req: rq.Request, now_s: int) -> Answer | Miss:
        keep = req.keep_alive
        with_body = req.method != "HEAD"
        if req.method not in ("GET", "HEAD"):
            return Answer(
                responses.error(
                    405,
                    "only GET and HEAD",
                    keep_alive=keep,
                    now_s=now_s,
                    extra=(("Allow", "GET, HEAD"),),
                )
            )
        sha = rq.package_of(req.path)
        if sha is None:
            return Answer(
                responses.error(404, "not found", keep_alive=keep, now_s=now_s, with_body=with_body)
            )
        try:
            device_id = self.authorizer.device_for(
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
        package = self.cache.cached(sha)
        if package is None:
            return Miss(sha)
        plan = responses.for_package(
            method=req.method,
            package_sha256=sha,
            size=package.size,
            range_header=req.range,
            if_range=req.if_range,
            keep_alive=keep,
            now_s=now_s,
            max_ranges=self.settings.max_ranges,
        )
        return Answer(plan, package, device_id)

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
