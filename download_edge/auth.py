"""Download authorisation: a token bound to one device and one package.

Maps `ota.tokens.verify` verdicts to HTTP: no token 401, malformed or wrong 403,
expired 410. Valid verdicts are remembered (bounded LRU) so a device resuming many
small ranges does not pay an HMAC per request; expiry is still checked every time.
"""

from __future__ import annotations

from collections import OrderedDict

from ota.settings import TokenKeys
from ota.tokens import Verdict, verify


class DeniedError(Exception):
    """The request may not have the package; `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_STATUS = {Verdict.MALFORMED: 403, Verdict.WRONG: 403, Verdict.EXPIRED: 410}
_REASON = {
    Verdict.MALFORMED: "malformed download token",
    Verdict.WRONG: "download token not valid for this package",
    Verdict.EXPIRED: "download token expired",
}


class Authorizer:
    def __init__(self, keys: TokenKeys, cache_size: int = 65_536) -> None:
        self._keys = keys
        self._cache_size = cache_size
        self._valid: OrderedDict[tuple[str, str], tuple[str, int]] = OrderedDict()

    def device_for(self, token: str | None, package_sha256: str, now_s: int) -> str:
        """The device the token was minted for, or `DeniedError`."""
        return self.check(token, package_sha256, now_s)[0]

    def check(self, token: str | None, package_sha256: str, now_s: int) -> tuple[str, int]:
        """(device id, expiry in epoch seconds) of a valid token, or `DeniedError`."""
        if token is None:
            raise DeniedError(401, "download token required")
        key = (token, package_sha256)
        known = self._valid.get(key)
        if known is not None:
            if now_s >= known[1]:
                del self._valid[key]
                raise DeniedError(410, _REASON[Verdict.EXPIRED])
            return known
        check = verify(self._keys, token, package_sha256=package_sha256, now_s=now_s)
        if check.verdict is not Verdict.VALID:
            raise DeniedError(_STATUS[check.verdict], _REASON[check.verdict])
        assert check.device_id is not None
        assert check.expires_s is not None
        known = (check.device_id, check.expires_s)
        self._valid[key] = known
        if len(self._valid) > self._cache_size:
            self._valid.popitem(last=False)
        return known
