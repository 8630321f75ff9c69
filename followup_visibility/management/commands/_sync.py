from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import CommandError, OutputWrapper
from django.db import models

from followup_visibility.registry import adapters


def tracked_models(labels: list[str]) -> list[type[models.Model]]:
    tracked = adapters()
    if not labels:
        return list(tracked)
    chosen = []
    for label in labels:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            raise CommandError(f"{label!r} is not an installed model.") from None
        if model not in tracked:
            raise CommandError(f"{label} is not in FOLLOWUP_VISIBILITY_TRACKED_MODELS.")
        chosen.append(model)
    return chosen


class ProgressBar:
    """A one-line text progress bar, redrawn in place with a carriage return."""

    def __init__(self, out: OutputWrapper, label: str, *, enabled: bool) -> None:
        self.out, self.label, self.enabled = out, label, enabled

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * done // total if total else width
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        self.out.write(f"\r{self.label:<20} [{bar}] {done}/{total}{end}", ending="")
        self.out.flush()


def add_model_arguments(parser: Any) -> None:
    parser.add_argument(
        "models", nargs="*", metavar="app_label.Model", help="Tracked models (default: all)."
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="Rows per transaction.")
    parser.add_argument("--no-progress", action="store_true", help="Print no progress bar.")
