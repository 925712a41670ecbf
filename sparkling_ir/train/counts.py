"""Counts in printed text: `1 layer`, `4 layers`, `2,048 tokens`."""

from __future__ import annotations


def count_noun(count: int, noun: str, plural: str | None = None) -> str:
    """Write `count` with thousands separators and `noun`, or its plural unless `count` is 1.

    The plural defaults to `noun + "s"`.
    """
    word = noun if count == 1 else plural or f"{noun}s"
    return f"{count:,} {word}"
