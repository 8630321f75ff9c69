"""Configuration read once per process and kept while the stored generation token holds.

Policies, calendars and the organisation are small tables every refresh needs; reading them
each time was most of the queries of a touch. A refresh reads the token instead (one query)
and loads again only when it changed (see :func:`followup_visibility.config.generation.bump`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from followup_visibility.models import ConfigurationGeneration

T = TypeVar("T")

_cache: dict[str, tuple[str, Any]] = {}


def token() -> str:
    """The current generation token; ``""`` when there is none (nothing is then cached)."""
    return (
        ConfigurationGeneration.objects.filter(pk=1).values_list("token", flat=True).first() or ""
    )


def cached(name: str, current: str, load: Callable[[], T]) -> T:
    """``load()``'s value for ``name``, reused while the token is ``current``."""
    hit = _cache.get(name)
    if current and hit is not None and hit[0] == current:
        value: T = hit[1]
        return value
    value = load()
    if current:
        _cache[name] = (current, value)
    return value
