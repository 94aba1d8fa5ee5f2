"""Optional request signing for push endpoints: HMAC-SHA256 over a timestamp and the raw body.

A gateway registered with `tracker gateway add --signed` must send, besides its bearer key,

    X-Tracker-Timestamp: <unix seconds>
    X-Tracker-Signature: sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>

where `body` is the exact bytes on the wire (before any gzip/deflate decoding) and `secret`
the gateway's signing secret as printed, UTF-8 encoded. The timestamp bounds how long a
captured request stays usable (the tolerance, 300 s by default, either way), and a bounded
cache refuses the same signature twice within that window. Records are idempotent anyway
(record_id), so a replay could not double-count; refusing it is defence in depth, and makes
"sign every attempt, including retries" the rule for clients.

This module is pure (no web framework): `collector.auth` calls `SignatureVerifier.verify`.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
import re
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Tracker-Timestamp"
SIGNATURE_HEADER = "X-Tracker-Signature"
SCHEME = "sha256="
DEFAULT_TOLERANCE_SECONDS = 300
# A signature is remembered until its timestamp + tolerance, about 300 s after it arrives: room
# for ~330 signed requests/s per process. When full, the entries closest to expiry are dropped
# first (and a warning logged once).
DEFAULT_REPLAY_CACHE_SIZE = 100_000

_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE_RE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")


class SignatureError(Exception):
    """The request's signature is missing, malformed, out of its time window, wrong or
    replayed; `reason` is the answer's detail (it never contains the secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SCHEME + mac.hexdigest()


def sign(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The two headers a client adds to a request carrying `body` (for tests, the bench and
    Python clients; any language's HMAC library does the same in three lines)."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


class ReplayCache:
    """Signatures seen, each remembered while its timestamp is inside the tolerance window.

    Bounded. When full, a gateway holding at least an equal share of the cache (its size over
    the gateways holding signatures) gives up its own signature closest to expiry; one holding
    less takes the place of the gateway holding the most. So one signed gateway sending many
    requests (a leaked secret, say) cannot push another below an equal share and so reopen its
    requests to replay (found in review: when full, the signatures closest to expiry went,
    whoever's they were). An entry lasts while its request could still pass the window: its
    expiry is the last accepted second itself.

    Per gateway a dict for membership and a heap for its own evictions, and one heap for
    expiry across all; entries evicted early stay in the heaps until popped, and a heap that
    grows past twice its live entries is rebuilt, so each call costs O(log n) amortized."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._seen: dict[str, dict[str, float]] = {}  # gateway -> signature -> expiry
        self._own: dict[str, list[tuple[float, str]]] = {}
        self._all: list[tuple[float, str, str]] = []
        self._size = 0
        self._lock = threading.Lock()
        self._warned = False

    def __len__(self) -> int:
        return self._size

    def _forget(self, gateway: str, key: str) -> None:
        mine = self._seen[gateway]
        del mine[key]
        self._size -= 1
        if not mine:
            del self._seen[gateway], self._own[gateway]

    def _live(self, gateway: str, key: str, expiry: float) -> bool:
        return self._seen.get(gateway, {}).get(key) == expiry

    def _purge(self, now: float) -> None:
        while self._all and self._all[0][0] < now:
            expiry, gateway, key = heapq.heappop(self._all)
            if self._live(gateway, key, expiry):
                self._forget(gateway, key)
        if len(self._all) > 2 * self._size + 64:
            self._all = [(e, g, k) for g, mine in self._seen.items() for k, e in mine.items()]
            heapq.heapify(self._all)

    def _evict_from(self, gateway: str) -> None:
        heap = self._own[gateway]
        while True:
            expiry, key = heapq.heappop(heap)
            if self._live(gateway, key, expiry):
                self._forget(gateway, key)
                break
        mine = self._seen.get(gateway)
        if mine is not None and len(heap) > 2 * len(mine) + 64:
            self._own[gateway] = [(e, k) for k, e in mine.items()]
            heapq.heapify(self._own[gateway])

    def first_use(self, gateway: str, key: str, expires_at: float, now: float) -> bool:
        """Record `key` of `gateway`; False if it is recorded and `now` is not past its
        `expires_at` (the last second its request passes the window)."""
        with self._lock:
            self._purge(now)
            mine = self._seen.get(gateway, {})
            if key in mine:
                return False
            while self._size >= self.max_entries and self._size:
                holders = len(self._seen) + (gateway not in self._seen)
                if len(mine) * holders >= self.max_entries:
                    loser = gateway
                else:  # scans the gateways: only while this one holds less than its share
                    loser = max(self._seen, key=lambda g: len(self._seen[g]))
                self._evict_from(loser)
                mine = self._seen.get(gateway, {})
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "replay cache full (%d signatures): a gateway over its equal share "
                        "gives up its own signatures closest to expiry",
                        self.max_entries,
                    )
            self._seen.setdefault(gateway, {})[key] = expires_at
            heapq.heappush(self._own.setdefault(gateway, []), (expires_at, key))
            heapq.heappush(self._all, (expires_at, gateway, key))
            self._size += 1
            return True


class SignatureVerifier:
    """Checks the two headers against the raw body; raises SignatureError with the reason.

    `replay_cache_size=0` turns replay refusal off (the time window still applies)."""

    def __init__(
        self,
        *,
        tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
        replay_cache_size: int = DEFAULT_REPLAY_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if tolerance_seconds < 1:
            raise ValueError("tolerance_seconds must be at least 1")
        self.tolerance_seconds = tolerance_seconds
        self._clock = clock
        self._replays = ReplayCache(replay_cache_size) if replay_cache_size > 0 else None

    def verify(
        self,
        gateway_id: str,
        secret: str,
        timestamp: str | None,
        signature_header: str | None,
        body: bytes,
    ) -> None:
        if not timestamp or not signature_header:
            headers = ((TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signature_header))
            missing = [name for name, value in headers if not value]
            raise SignatureError(
                f"this gateway must sign its requests: missing {' and '.join(missing)}"
            )
        timestamp = timestamp.strip()
        if not _TIMESTAMP_RE.match(timestamp):
            raise SignatureError(f"{TIMESTAMP_HEADER} must be a Unix time in whole seconds")
        match = _SIGNATURE_RE.match(signature_header.strip())
        if match is None:
            raise SignatureError(f"{SIGNATURE_HEADER} must be sha256=<64 hex digits>")
        now = self._clock()
        skew = now - int(timestamp)
        if skew > self.tolerance_seconds:
            raise SignatureError(
                f"request timestamp is {int(skew)} s old, over the {self.tolerance_seconds} s "
                "tolerance: sign each request when sending it, and check the clock"
            )
        if -skew > self.tolerance_seconds:
            raise SignatureError(
                f"request timestamp is {int(-skew)} s in the future, over the "
                f"{self.tolerance_seconds} s tolerance: check the gateway's clock"
            )
        given = match[1].lower()
        expected = signature(secret, timestamp, body).removeprefix(SCHEME)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise SignatureError(
                "signature does not match the body and timestamp (sign the exact bytes sent, "
                "after compression, with this gateway's signing secret)"
            )
        if self._replays is not None:
            expires_at = int(timestamp) + self.tolerance_seconds
            if not self._replays.first_use(gateway_id, given, expires_at, now):
                raise SignatureError(
                    "signature already used: a replayed request (sign every attempt anew, "
                    "retries included)"
                )
