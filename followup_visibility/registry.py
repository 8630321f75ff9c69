"""Which host models are tracked, and their adapters (built from settings, cached)."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.apps import apps
from django.contrib.admin import AdminSite
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver
from django.utils.module_loading import import_string

from followup_visibility.adapters import OpportunityAdapter
from followup_visibility.conf import PREFIX, app_settings


class NotTracked(LookupError):
    """The model is not listed in ``FOLLOWUP_VISIBILITY_TRACKED_MODELS``."""


def adapters() -> dict[type[models.Model], OpportunityAdapter]:
    """Every tracked model with its adapter instance."""
    return _build(tuple(sorted(app_settings.TRACKED_MODELS.items())))


@cache
def _build(items: tuple[tuple[str, str], ...]) -> dict[type[models.Model], OpportunityAdapter]:
    result: dict[type[models.Model], OpportunityAdapter] = {}
    for label, adapter_path in items:
        model = apps.get_model(label)
        adapter_class: type[OpportunityAdapter] = import_string(adapter_path)
        result[model] = adapter_class(model)
    return result


def get_adapter(model_or_obj: type[models.Model] | models.Model) -> OpportunityAdapter:
    model = model_or_obj if isinstance(model_or_obj, type) else type(model_or_obj)
    concrete: Any = model._meta.concrete_model or model
    try:
        return adapters()[concrete]
    except KeyError:
        raise NotTracked(f"{model._meta.label} is not a tracked model") from None


def is_tracked(model: type[models.Model]) -> bool:
    return (model._meta.concrete_model or model) in adapters()


@receiver(setting_changed)
def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith(PREFIX):
        _build.cache_clear()


# Admin sites ---------------------------------------------------------------------------------


def admin_site_problems() -> list[tuple[str, str]]:
    """``(path, problem)`` for each entry of ``FOLLOWUP_VISIBILITY_ADMIN_SITES`` that is not
    an importable ``AdminSite`` (reported by the check ``followup_visibility.E030``)."""
    return [(path, problem) for path, _site, problem in _resolve() if problem]


def configured_admin_sites() -> list[AdminSite]:
    """The admin sites ``FOLLOWUP_VISIBILITY_ADMIN_SITES`` names (those that import)."""
    return [site for _path, site, problem in _resolve() if site is not None and not problem]


def _resolve() -> list[tuple[str, AdminSite | None, str]]:
    paths = app_settings.ADMIN_SITES
    if isinstance(paths, str):
        return [(paths, None, "the setting is a string; it must be a list of dotted paths")]
    resolved: list[tuple[str, AdminSite | None, str]] = []
    for path in paths:
        try:
            site = import_string(path)
        except ImportError as exc:
            resolved.append((path, None, f"it does not import ({exc})"))
            continue
        if not isinstance(site, AdminSite):
            resolved.append((path, None, "it is not an AdminSite instance"))
            continue
        resolved.append((path, site, ""))
    return resolved
