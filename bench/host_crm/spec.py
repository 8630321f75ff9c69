"""The generated models, shared by ``models.py`` and the app's one migration.

Like a real CRM's: every model has a handful of plain columns, every other one an owner (a
foreign key to the user model) and all but the first a parent, so that they form one tree of
foreign keys joined to the user model. That matters: Django re-renders every model related to
one it changes, so the host's models are rendered again by many of our migration operations.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

N_MODELS = 100


def model_name(i: int) -> str:
    return f"Record{i:03d}"


def fields(i: int) -> list[tuple[str, models.Field]]:  # type: ignore[type-arg]
    """Fresh field instances for model ``i`` (a field belongs to one model only)."""
    columns: list[tuple[str, models.Field]] = [  # type: ignore[type-arg]
        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
        ("name", models.CharField(max_length=200)),
        ("code", models.CharField(max_length=40, db_index=True)),
        ("amount", models.DecimalField(max_digits=14, decimal_places=2, null=True)),
        ("notes", models.TextField(blank=True)),
        ("is_active", models.BooleanField(default=True)),
        ("created_at", models.DateTimeField()),
    ]
    if i % 2 == 0:
        owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True)
        columns.append(("owner", owner))
    if i:
        parent = models.ForeignKey(f"host_crm.{model_name((i - 1) // 2)}", models.CASCADE)
        columns.append(("parent", parent))
    return columns
