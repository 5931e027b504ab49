"""How the `warmline` command words its reports."""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``0 rows``: every count the command reports reads right."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
