"""Who may read what: IMDSv2 session tokens, neutron-style proxy signatures, rate limits.

- **Tokens** are stateless: ``base64url(version ‖ expiry ‖ HMAC-SHA256(key, uuid ‖ expiry))``.
  Any server holding the key verifies them without shared state; a token is bound to the
  instance it was minted for (its uuid is in the MAC, not in the token) and to its expiry.
- **Proxy signatures** are nova's: hex HMAC-SHA256 of the instance id with the shared secret,
  compared with :func:`hmac.compare_digest`.
- **Rate limits** are per-instance token buckets with a burst allowance sized for a cloud-init
  crawl (tens of requests at once), then a steady refill.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "TOKEN_TTL_MAX",
    "RateLimiter",
    "TokenSigner",
    "sign_instance_id",
    "verify_instance_signature",
]

TOKEN_TTL_MAX = 21600  # 6 h, EC2's limit
_TOKEN_VERSION = 1
_TOKEN = struct.Struct(">BQ")  # version, expiry (unix seconds)
_MAC_BYTES = 32


@dataclass(frozen=True)
class TokenSigner:
    """Mints and checks IMDSv2 tokens bound to an instance uuid and an expiry."""

    key: bytes
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("the IMDSv2 token key must be at least 16 bytes")

    def _mac(self, uuid: str, expiry: int) -> bytes:
        message = b"imdsv2\0" + uuid.encode() + b"\0" + _TOKEN.pack(_TOKEN_VERSION, expiry)
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def mint(self, uuid: str, ttl: int) -> str:
        expiry = int(self.clock()) + ttl
        raw = _TOKEN.pack(_TOKEN_VERSION, expiry) + self._mac(uuid, expiry)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    def remaining(self, token: str, uuid: str) -> int | None:
        """Seconds left on a valid token for ``uuid``; None when invalid, foreign or expired."""
        if len(token) > 128:
            return None
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return None
        if len(raw) != _TOKEN.size + _MAC_BYTES or base64.urlsafe_b64encode(raw) != token.encode():
            return None  # one canonical spelling: no trailing garbage, no lax padding
        version, expiry = _TOKEN.unpack_from(raw)
        if version != _TOKEN_VERSION:
            return None
        if not hmac.compare_digest(raw[_TOKEN.size :], self._mac(uuid, expiry)):
            return None
        left = expiry - int(self.clock())
        return left if left > 0 else None


def sign_instance_id(secret: str, instance_id: str) -> str:
    """nova/neutron ``X-Instance-ID-Signature``: hex HMAC-SHA256 of the instance id."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def verify_instance_signature(secret: str, instance_id: str, signature: str) -> bool:
    expected = sign_instance_id(secret, instance_id)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    """Token bucket per key: ``burst`` requests at once, refilled at ``rate`` per second.

    ``rate <= 0`` turns limiting off. Idle buckets (full again) are dropped by :meth:`sweep`.
    """

    rate: float = 50.0
    burst: int = 300
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def sweep(self) -> None:
        now = self.clock()
        full = [
            key
            for key, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
