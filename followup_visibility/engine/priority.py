"""The register's priority score: four factors, each with its share, so a rank can be explained.

Each factor is ``x / (x + half)`` of its raw value ``x``: 0 at nothing, one half at the
setting's half-point, approaching 1 beyond. The score is the weighted mean of the factors,
0 to 100; a factor's share is its part of the score. Intent and value carry most weight by
default, so a hot, valuable lead ranks above an old, cheap one (docs/register.md).

The score is computed in SQL (the ranking covers every row before the first page is cut)
and again in Python from the same inputs for the shares of the rows shown, operation for
operation, so the two agree to the last bit. A factor is computed as ``1 - half / (x + half)``,
which names ``x`` once: in SQL ``x`` may be a subquery (the lateness) that each mention repeats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import DateTimeField, ExpressionWrapper, F, FloatField, Value
from django.db.models.functions import Cast, Coalesce, Greatest

from followup_visibility.conf import app_settings
from followup_visibility.engine.severity import Micros, duration, micros

FACTORS = ("intent", "value", "lateness", "age")


@dataclass(frozen=True)
class Factor:
    """One factor of a row's score: its raw value, its level (0 to 1), weight and share."""

    name: str
    raw: float
    level: float
    weight: float
    #: The factor's part of the score, 0 to 1; the shares of a row sum to 1.
    share: float

    @property
    def share_percent(self) -> float:
        return 100 * self.share


def weights() -> dict[str, float]:
    """The configured weights, normalised to sum to 1."""
    raw = {name: float(app_settings.REGISTER_WEIGHTS.get(name, 0)) for name in FACTORS}
    total = sum(raw.values())
    return {name: value / total for name, value in raw.items()}


def half_points() -> dict[str, float]:
    """The half-points as floats; the age's in microseconds."""
    configured = app_settings.REGISTER_HALF_POINTS
    result = {}
    for name in FACTORS:
        value = configured[name]
        result[name] = float(micros(value)) if isinstance(value, timedelta) else float(value)
    return result


def level(raw: float, half: float) -> float:
    """``raw / (raw + half)``, 0 for nothing (or less); as :func:`_level_sql` computes it."""
    return 1.0 - half / (max(raw, 0.0) + half)


def explain(
    raw: Mapping[str, float], settings: tuple[dict[str, float], dict[str, float]] | None = None
) -> tuple[float, dict[str, Factor]]:
    """The score (0 to 100) and the factors of a row whose raw factor values are ``raw``;
    ``settings``: :func:`weights` and :func:`half_points`, read once for many rows."""
    w, halves = settings or (weights(), half_points())
    levels = {name: level(raw[name], halves[name]) for name in FACTORS}
    # Term for term and in the order :func:`score_expression` adds them, so that the score
    # shown is the score ranked by, to the last bit.
    parts = {name: (100 * w[name]) * levels[name] for name in FACTORS}
    score = 0.0
    for name in FACTORS:
        if w[name]:
            score += parts[name]
    factors = {
        name: Factor(
            name=name,
            raw=raw[name],
            level=levels[name],
            weight=w[name],
            share=parts[name] / score if score else 0.0,
        )
        for name in FACTORS
    }
    return score, factors


# SQL ----------------------------------------------------------------------------------------


def _level_sql(raw: Any, half: float) -> Any:
    return ExpressionWrapper(
        Value(1.0) - Value(half) / (Greatest(raw, Value(0.0)) + Value(half)),
        output_field=FloatField(),
    )


def raw_expressions(now: datetime, lateness: Any) -> dict[str, Any]:
    """SQL for each factor's raw value on an opportunity row; ``lateness`` is the row's
    greatest lateness in SLA lengths (an annotation the register computes from its alerts)."""
    return {
        "intent": Cast(Coalesce(F("segment__intent_weight"), Value(Decimal(1))), FloatField()),
        "value": Cast(Coalesce(F("value"), Value(Decimal(0))), FloatField()),
        "lateness": lateness,
        "age": Micros(duration(Value(now, output_field=DateTimeField()) - F("arrived_at"))),
    }


def score_expression(raw: Mapping[str, Any]) -> Any:
    """The score, 0 to 100, as SQL over the factors' raw values."""
    w, halves = weights(), half_points()
    total: Any = None
    for name in FACTORS:
        if not w[name]:
            continue
        part = Value(100 * w[name]) * _level_sql(raw[name], halves[name])
        total = part if total is None else total + part
    return Cast(total if total is not None else Value(0.0), FloatField())
