"""The scheduler's error tree; the API turns each into one JSON error response.

    SchedulerError            500 internal
    ├── ValidationError       422 a request field is wrong (code names what, `field` where)
    ├── BadRequest            400 the request cannot be read at all
    ├── Unauthorized          401 no or unknown API key
    ├── Forbidden             403 the key lacks the scope
    ├── NotFound              404
    ├── Conflict              409 the resource's state forbids the operation
    ├── Gone                  410 what was asked for is no longer held (the resource stays)
    ├── PayloadTooLarge       413
    └── Unavailable           503 a backing store failed; nothing was changed, retry later

Pure: raised by validation and services alike, rendered only at the HTTP edge.
"""

from __future__ import annotations


class SchedulerError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class ValidationError(SchedulerError):
    status = 422
    code = "invalid"


class BadRequest(SchedulerError):  # noqa: N818 - HTTP status names read best
    status = 400
    code = "bad_request"


class Unauthorized(SchedulerError):  # noqa: N818 - HTTP status names read best
    status = 401
    code = "unauthorized"


class Forbidden(SchedulerError):  # noqa: N818 - HTTP status names read best
    status = 403
    code = "forbidden"


class NotFound(SchedulerError):  # noqa: N818 - HTTP status names read best
    status = 404
    code = "not_found"


class Conflict(SchedulerError):  # noqa: N818 - HTTP status names read best
    status = 409
    code = "conflict"


class Gone(SchedulerError):  # noqa: N818 - HTTP status names read best
    status = 410
    code = "gone"


class PayloadTooLarge(SchedulerError):  # noqa: N818 - HTTP status names read best
    status = 413
    code = "payload_too_large"


class Unavailable(SchedulerError):  # noqa: N818 - HTTP status names read best
    status = 503
    code = "unavailable"
