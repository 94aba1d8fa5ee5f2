"""Request signing: known vectors (computed independently with `openssl dgst -sha256 -hmac`),
and every refusal of the verifier with its reason."""

from __future__ import annotations

import pytest

from collector.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayCache,
    SignatureError,
    SignatureVerifier,
    sign,
    signature,
)

SECRET = "tks_test-secret"
NOW = 1_763_856_000  # 2025-11-23T00:00:00Z
BODY = b'[{"record_id":"r1"}]'


@pytest.mark.parametrize(
    ("timestamp", "body", "expected"),
    [
        # printf '1763856000.[{"record_id":"r1"}]' | openssl dgst -sha256 -hmac tks_test-secret
        ("1763856000", BODY, "ebb76a2520f52fcdaf65fd1664ab640a7a2387af5be6220db267d1696ff2718c"),
        # an empty body (e.g. POST /v1/gateway/whoami): the input is "1700000000."
        ("1700000000", b"", "b81625cab8535cabc50bf0b49d6ee5d42ebe8662370a374ad6c37b8a0fb278b7"),
        # raw bytes, not text: a gzip header and a 0xff byte are signed as they are
        ("1763856000", b"\x1f\x8b\x00\xff", "26f96dc03c63f91b34487a716df065d0b4b224d804a9c1e35a9b78e1edb2794e"),
    ],
)  # fmt: skip
def test_known_vectors(timestamp: str, body: bytes, expected: str) -> None:
    assert signature(SECRET, timestamp, body) == "sha256=" + expected


def test_sign_builds_both_headers() -> None:
    headers = sign(SECRET, BODY, now=NOW + 0.9)
    assert headers == {
        TIMESTAMP_HEADER: "1763856000",
        SIGNATURE_HEADER: "sha256=ebb76a2520f52fcdaf65fd1664ab640a7a2387af5be6220db267d1696ff2718c",
    }


def verifier(now: float = NOW, **kwargs: int) -> SignatureVerifier:
    return SignatureVerifier(clock=lambda: now, **kwargs)


def reason(v: SignatureVerifier, ts: str | None, sig: str | None, body: bytes = BODY) -> str:
    with pytest.raises(SignatureError) as info:
        v.verify("gw", SECRET, ts, sig, body)
    return info.value.reason


def test_valid_signature_passes_and_uppercase_hex_is_accepted() -> None:
    h = sign(SECRET, BODY, now=NOW)
    verifier().verify("gw", SECRET, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER], BODY)
    upper = "sha256=" + h[SIGNATURE_HEADER].removeprefix("sha256=").upper()
    verifier().verify("gw", SECRET, h[TIMESTAMP_HEADER], upper, BODY)


def test_missing_headers_are_named() -> None:
    h = sign(SECRET, BODY, now=NOW)
    assert "missing X-Tracker-Timestamp and X-Tracker-Signature" in reason(verifier(), None, None)
    assert reason(verifier(), None, h[SIGNATURE_HEADER]).endswith("missing X-Tracker-Timestamp")
    assert reason(verifier(), h[TIMESTAMP_HEADER], "").endswith("missing X-Tracker-Signature")


@pytest.mark.parametrize("ts", ["-5", "1.5", "abc", "1763856000000000", "0x10", "١٢٣"])
def test_malformed_timestamp(ts: str) -> None:
    assert "Unix time in whole seconds" in reason(verifier(), ts, "sha256=" + "0" * 64)


@pytest.mark.parametrize(
    "sig", ["0" * 64, "sha1=" + "0" * 40, "sha256=" + "0" * 63, "sha256=" + "g" * 64, "sha256="]
)
def test_malformed_signature(sig: str) -> None:
    assert "sha256=<64 hex digits>" in reason(verifier(), str(NOW), sig)


def test_tolerance_both_ways() -> None:
    h = sign(SECRET, BODY, now=NOW)
    ts, sig = h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER]
    # At the edge it passes (fresh verifiers: no replay cache in the way) ...
    verifier(now=NOW + 300).verify("gw", SECRET, ts, sig, BODY)
    verifier(now=NOW - 300).verify("gw", SECRET, ts, sig, BODY)
    # ... one second past it is refused, with the direction in the reason.
    assert "301 s old, over the 300 s tolerance" in reason(verifier(now=NOW + 301), ts, sig)
    assert "301 s in the future" in reason(verifier(now=NOW - 301), ts, sig)
    assert "11 s old" in reason(verifier(now=NOW + 11, tolerance_seconds=10), ts, sig)


def test_wrong_signature_body_timestamp_or_secret() -> None:
    h = sign(SECRET, BODY, now=NOW)
    ts, sig = h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER]
    assert "does not match" in reason(verifier(), ts, sig, BODY + b" ")  # tampered body
    assert "does not match" in reason(verifier(), str(NOW + 1), sig)  # timestamp moved
    other = sign("tks_other", BODY, now=NOW)[SIGNATURE_HEADER]
    assert "does not match" in reason(verifier(), ts, other)  # another gateway's secret


def test_replay_refused_within_window_and_per_gateway() -> None:
    v = verifier()
    h = sign(SECRET, BODY, now=NOW)
    ts, sig = h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER]
    v.verify("gw", SECRET, ts, sig, BODY)
    assert "already used" in reason(v, ts, sig)
    # A new attempt signed a second later is a different signature: accepted.
    h2 = sign(SECRET, BODY, now=NOW + 1)
    v.verify("gw", SECRET, h2[TIMESTAMP_HEADER], h2[SIGNATURE_HEADER], BODY)
    # Replay refusal can be turned off; the window still applies.
    off = verifier(replay_cache_size=0)
    off.verify("gw", SECRET, ts, sig, BODY)
    off.verify("gw", SECRET, ts, sig, BODY)


def test_failed_verification_does_not_fill_the_replay_cache() -> None:
    v = verifier()
    h = sign(SECRET, BODY, now=NOW)
    reason(v, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER], b"tampered")
    v.verify("gw", SECRET, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER], BODY)


def test_replay_cache_expires_and_stays_bounded() -> None:
    cache = ReplayCache(max_entries=3)
    assert cache.first_use("gw", "a", expires_at=10, now=0)
    assert not cache.first_use("gw", "a", expires_at=10, now=5)
    assert not cache.first_use("gw", "a", expires_at=10, now=10)  # its last accepted second
    assert cache.first_use("gw", "a", expires_at=20, now=11)  # past it: usable again
    for key, expiry in (("b", 30), ("c", 40), ("d", 50)):
        assert cache.first_use("gw", key, expires_at=expiry, now=12)
    assert len(cache) == 3  # "a" (closest to expiry) made room for "d"
    assert cache.first_use("gw", "a", expires_at=20, now=12)
    assert not cache.first_use("gw", "d", expires_at=50, now=12)
    assert cache.first_use("other", "a", expires_at=20, now=12)  # keyed per gateway


def test_replay_at_the_last_second_of_the_window_is_refused() -> None:
    # Found in review: the entry was dropped at timestamp + tolerance, the very second the
    # window still accepts, so the same request passed again then.
    clock = [float(NOW)]
    v = SignatureVerifier(clock=lambda: clock[0])
    h = sign(SECRET, BODY, now=NOW)
    v.verify("gw", SECRET, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER], BODY)
    clock[0] = NOW + 300
    assert "already used" in reason(v, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER])


def test_a_gateway_filling_the_replay_cache_cannot_push_another_below_an_equal_share() -> None:
    # Found in review: when full, the cache dropped whichever signatures were closest to expiry,
    # so one signed gateway sending many requests dated ahead pushed out every other gateway's
    # and a captured request of theirs could be replayed.
    cache = ReplayCache(max_entries=100)
    assert cache.first_use("quiet", "q", expires_at=310, now=10)
    for i in range(80):
        assert cache.first_use("busy", f"b{i}", expires_at=100 + i, now=10)
    for i in range(5000):
        assert cache.first_use("flooder", f"f{i}", expires_at=600, now=10)
    assert len(cache) == 100
    # The flooder took room from the gateway holding the most until it held an equal share
    # (34 of 100 over three gateways), then from its own: the busy one keeps its newest 65,
    # the quiet one its one.
    assert not cache.first_use("quiet", "q", expires_at=310, now=20)
    assert all(not cache.first_use("busy", f"b{i}", expires_at=100 + i, now=20)
               for i in range(15, 80))  # fmt: skip
    assert cache.first_use("busy", "b14", expires_at=114, now=20)  # its oldest went
    assert cache.first_use("flooder", "f0", expires_at=600, now=20)  # one of its own, evicted


def test_replay_cache_heaps_stay_bounded_under_a_flood() -> None:
    # Signatures evicted early stay in the heaps until popped; the heaps are rebuilt when they
    # outgrow the live entries, so a flood cannot grow them past a multiple of the cache.
    cache = ReplayCache(max_entries=50)
    for i in range(20_000):
        cache.first_use("flooder", f"f{i}", expires_at=10_000 + i, now=10)
    assert len(cache) == 50
    assert len(cache._all) <= 2 * 50 + 64 + 1 and len(cache._own["flooder"]) <= 2 * 50 + 64 + 1


def test_tolerance_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        SignatureVerifier(tolerance_seconds=0)
