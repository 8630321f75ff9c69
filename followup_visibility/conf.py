"""Typed access to the ``FOLLOWUP_VISIBILITY_*`` settings.

Every property reads ``django.conf.settings`` at access time, so ``override_settings`` works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings

PREFIX = "FOLLOWUP_VISIBILITY_"

DEFAULT_TOUCH_RULES: tuple[str, ...] = (
    "followup_visibility.engine.touch_rules.internal_note",
    "followup_visibility.engine.touch_rules.stage_change_without_contact",
    "followup_visibility.engine.touch_rules.auto_reply",
    "followup_visibility.engine.touch_rules.untargeted_template",
    "followup_visibility.engine.touch_rules.failed_delivery",
    "followup_visibility.engine.touch_rules.no_conversation",
)

#: Medium from one SLA late, high from 24, critical from 576 (24 x 24): one hour, one day and
#: 24 days on a one-hour SLA. Calibrated on the demo (docs/escalation.md#severity).
DEFAULT_SEVERITY_THRESHOLDS: tuple[float, float, float] = (1.0, 24.0, 576.0)

#: Intent and value first: together they outweigh lateness and age (docs/register.md).
DEFAULT_REGISTER_WEIGHTS: Mapping[str, float] = {
    "intent": 0.35,
    "value": 0.35,
    "lateness": 0.2,
    "age": 0.1,
}
DEFAULT_REGISTER_HALF_POINTS: Mapping[str, Any] = {
    "intent": 1.0,
    "value": 10_000,
    "lateness": 1.0,
    "age": timedelta(days=5),
}


class Settings:
    """One property per setting; defaults live here and nowhere else."""

    def _get(self, name: str, default: Any) -> Any:
        return getattr(settings, PREFIX + name, default)

    @property
    def TRACKED_MODELS(self) -> Mapping[str, str]:
        """``{"app_label.Model": "dotted.path.to.AdapterClass"}`` for each tracked host model."""
        value: Mapping[str, str] = self._get("TRACKED_MODELS", {})
        return value

    @property
    def PHONE_REGION(self) -> str:
        """ISO 3166 region used to parse phone numbers written without a country code."""
        value: str = self._get("PHONE_REGION", "US")
        return value

    @property
    def MAX_CLOCK_SKEW(self) -> timedelta:
        """How far in the future a touch's ``occurred_at`` may lie before it is rejected."""
        value: timedelta = self._get("MAX_CLOCK_SKEW", timedelta(minutes=5))
        return value

    @property
    def TOUCH_RULES(self) -> Sequence[str]:
        """Dotted paths of the rules that classify touches; the first verdict wins."""
        value: Sequence[str] = self._get("TOUCH_RULES", DEFAULT_TOUCH_RULES)
        return value

    @property
    def SYNC_CHUNK_SIZE(self) -> int:
        """Host rows read and written per transaction by backfill and reconcile."""
        value: int = self._get("SYNC_CHUNK_SIZE", 500)
        return value

    @property
    def ACCEPT_HANDOFF_ON_TOUCH(self) -> bool:
        """Whether the new owner's first meaningful outbound touch accepts a pending handoff."""
        value: bool = self._get("ACCEPT_HANDOFF_ON_TOUCH", True)
        return value

    @property
    def RECOMPUTE_CHUNK_SIZE(self) -> int:
        """Open opportunities per task when a policy or calendar change recomputes deadlines."""
        value: int = self._get("RECOMPUTE_CHUNK_SIZE", 2000)
        return value

    @property
    def SWEEP_CHUNK_SIZE(self) -> int:
        """Opportunity keys per task in a full sweep pass (a steady pass is one chunk)."""
        value: int = self._get("SWEEP_CHUNK_SIZE", 50000)
        return value

    @property
    def SNOOZE_MAX(self) -> timedelta:
        """The longest snooze; a snooze until a condition ends at this limit at the latest."""
        value: timedelta = self._get("SNOOZE_MAX", timedelta(days=30))
        return value

    @property
    def SEVERITY_THRESHOLDS(self) -> Sequence[float]:
        """Lateness, as a multiple of the SLA's length times the segment's intent weight, from
        which an alert is medium, high and critical. The default is a logarithmic scale, each
        level 24 times later than the one before (docs/escalation.md#severity)."""
        value: Sequence[float] = self._get("SEVERITY_THRESHOLDS", DEFAULT_SEVERITY_THRESHOLDS)
        return value

    @property
    def NOTIFY_MIN_SEVERITY(self) -> str:
        """The lowest severity of an alert that notifies its owner: ``"medium"`` (late by a
        whole SLA, with the default thresholds), ``"high"`` or ``"critical"``."""
        value: str = self._get("NOTIFY_MIN_SEVERITY", "medium")
        return value

    @property
    def NOTIFY_REPEAT(self) -> timedelta:
        """How long before an unchanged alert may be sent again to the same person."""
        value: timedelta = self._get("NOTIFY_REPEAT", timedelta(hours=24))
        return value

    @property
    def NOTIFY_EMAIL(self) -> bool:
        """Whether notifications are also emailed (the in-app inbox always gets them)."""
        value: bool = self._get("NOTIFY_EMAIL", True)
        return value

    @property
    def ADMIN_SITES(self) -> Sequence[str]:
        """Dotted paths of the admin sites the app's model admins are registered on; ``[]``
        registers none (the host calls ``followup_visibility.admin.register(site)``)."""
        value: Sequence[str] = self._get("ADMIN_SITES", ("django.contrib.admin.site",))
        return value

    @property
    def USER_TENANTS(self) -> str | None:
        """Dotted path of a callable ``(user) -> Iterable[str] | None``: the companies
        (tenants) ``user`` may see and be told about, ``None`` for every one. Unset (``None``):
        tenancy is off and no opportunity is limited by its tenant."""
        value: str | None = self._get("USER_TENANTS", None)
        return value

    @property
    def REGISTER_WEIGHTS(self) -> Mapping[str, float]:
        """How much each factor counts in the register's priority score: ``intent``,
        ``value``, ``lateness`` and ``age``, non-negative numbers (only their ratios matter)."""
        value: Mapping[str, float] = self._get("REGISTER_WEIGHTS", DEFAULT_REGISTER_WEIGHTS)
        return value

    @property
    def REGISTER_HALF_POINTS(self) -> Mapping[str, Any]:
        """Where each priority factor reaches half its weight: an intent weight, an economic
        value, a lateness in SLA lengths, and an age (a ``timedelta``)."""
        value: Mapping[str, Any] = self._get("REGISTER_HALF_POINTS", DEFAULT_REGISTER_HALF_POINTS)
        return value

    @property
    def API_MAX_BATCH(self) -> int:
        """The most touches (or alert ids) one API request may carry; more answers 413."""
        value: int = self._get("API_MAX_BATCH", 1000)
        return value

    @property
    def API_INGEST_RATE(self) -> str | None:
        """DRF throttle rate of touch ingestion per user (``"600/min"``); ``None``: no limit."""
        value: str | None = self._get("API_INGEST_RATE", "600/min")
        return value


app_settings = Settings()
