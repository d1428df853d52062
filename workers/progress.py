"""Which phase a device's in-progress report (result 0, progress < 100) belongs to.

IoTDA's `upgrade_progress_report` has one `progress` scale for the whole upgrade and no
phase field, and the edge's "download finished" record travels apart from the device's
reports, so a download report the device sent before its last byte can reach the inbox
after that record. A report read after the download finished is still download progress
when either
- its `description` says so: it begins with "downloading" (any case) or "下载中"
  (the free text is the protocol's only phase signal; devices that fill it mostly do so), or
- its `progress` is not above the download high-water mark: the highest progress the
  device reported while the job still waited on the download (a repeat or a late copy).
Anything else is update progress. Pure; no I/O.
"""

from __future__ import annotations

import re

_DOWNLOADING = re.compile(r"\s*(downloading|下载中)", re.IGNORECASE)


def is_download_progress(download_pct: int | None, progress: int, description: str | None) -> bool:
    """True when a report of `progress` belongs to the download rather than the update."""
    if description is not None and _DOWNLOADING.match(description):
        return True
    return download_pct is not None and progress <= download_pct


def raised_mark(download_pct: int | None, progress: int) -> int:
    """The download high-water mark after a download report of `progress`."""
    return progress if download_pct is None else max(download_pct, progress)
