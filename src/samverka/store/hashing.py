"""Stable 64-bit hashes for compact index keys (identical in every process and on every backend)."""

from __future__ import annotations

from hashlib import blake2b


def h64(value: str) -> int:
    """A signed 64-bit hash of `value`; never 0, which the index reserves for "absent"."""
    n = int.from_bytes(blake2b(value.encode(), digest_size=8).digest(), "big", signed=True)
    return n or 1


def h64_opt(value: str | None) -> int:
    return 0 if value is None else h64(value)
