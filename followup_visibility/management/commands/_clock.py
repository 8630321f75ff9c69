"""``--now`` for the cron commands: the clock is a parameter here too (replays, tests)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone


def add_now_argument(parser: Any) -> None:
    parser.add_argument(
        "--now",
        help="Run as of this ISO 8601 time with an offset (default: the current time).",
    )


def parse_now(value: str | None) -> datetime:
    if not value:
        return timezone.now()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--now {value!r} is not an ISO 8601 datetime.") from exc
    if timezone.is_naive(parsed):
        raise CommandError(f"--now {value!r} has no UTC offset; add one (e.g. +00:00).")
    return parsed
