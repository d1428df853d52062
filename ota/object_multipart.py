"""S3's multipart upload, the pure part: S3's limits, the part plan, the XML both ways.

An object larger than one part (OTA_S3_PART_MIB) is written as CreateMultipartUpload
(POST ?uploads, answering an UploadId), one UploadPart per part (PUT
?partNumber=n&uploadId=id, answering the part's ETag), then CompleteMultipartUpload (POST
?uploadId=id with the part numbers and ETags in order); after any failure
AbortMultipartUpload (DELETE ?uploadId=id) frees the parts already stored. The requests
are sent by ota/object_store.py; nothing here does I/O.

S3's limits: a part is 5 MiB to 5 GiB (the last may be smaller), at most 10,000 parts,
an object at most 5 TiB. The XML replies are read with a pattern, not an XML parser: only
the UploadId and an Error's Code and Message are needed, and no parser runs on bytes from
the network.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape, unescape

MIB = 1024**2
MIN_PART_BYTES = 5 * MIB
MAX_PART_BYTES = 5 * 1024 * MIB
MAX_PARTS = 10_000
MAX_OBJECT_BYTES = 5 * 1024**4
DEFAULT_PART_MIB = 64
_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_UPLOAD_ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")
_ERROR = re.compile(rb"<Error>.*?<Code>([^<]*)</Code>(?:.*?<Message>([^<]*)</Message>)?", re.S)


class ObjectTooLargeError(ValueError):
    """The object is beyond what a multipart upload of this part size can hold."""


def max_object_bytes(part_bytes: int) -> int:
    """The largest object 10,000 parts of `part_bytes` hold, and S3 accepts."""
    return min(MAX_PARTS * part_bytes, MAX_OBJECT_BYTES)


def plan_parts(size: int, part_bytes: int) -> list[int]:
    """The sizes of the parts of a `size`-byte object, in order (part n is index n-1):
    whole parts of `part_bytes`, the remainder last."""
    if not MIN_PART_BYTES <= part_bytes <= MAX_PART_BYTES:
        raise ValueError(f"a part of {part_bytes} bytes is outside S3's 5 MiB..5 GiB")
    if size > max_object_bytes(part_bytes):
        raise ObjectTooLargeError(
            f"{size} bytes is over the {max_object_bytes(part_bytes)} bytes a multipart "
            f"upload of {part_bytes}-byte parts holds (at most {MAX_PARTS} parts, 5 TiB)"
        )
    whole, rest = divmod(size, part_bytes)
    return [part_bytes] * whole + ([rest] if rest else [])


def complete_body(etags: Sequence[str]) -> bytes:
    """CompleteMultipartUpload's body: part n (from 1) with the ETag its upload answered."""
    parts = "".join(
        f"<Part><PartNumber>{number}</PartNumber><ETag>{escape(etag, quote=False)}</ETag></Part>"
        for number, etag in enumerate(etags, start=1)
    )
    return (
        f'<CompleteMultipartUpload xmlns="{_NAMESPACE}">{parts}</CompleteMultipartUpload>'.encode()
    )


def upload_id_of(reply: bytes) -> str:
    """The UploadId in CreateMultipartUpload's reply; ValueError when there is none."""
    found = _UPLOAD_ID.search(reply)
    if found is None:
        raise ValueError(f"no UploadId in the reply {reply[:200]!r}")
    return unescape(found.group(1).decode())


def error_in(reply: bytes) -> str | None:
    """`Code: Message` when a reply is an Error document: CompleteMultipartUpload can
    answer 200 and still fail, with the error in the body."""
    found = _ERROR.search(reply)
    if found is None:
        return None
    code, message = (unescape((group or b"").decode(errors="replace")) for group in found.groups())
    return f"{code}: {message}" if message else code


def retriable_status(status: int) -> bool:
    """A reply worth sending the request again for: the store's fault or its throttling."""
    return status >= 500 or status == 429
