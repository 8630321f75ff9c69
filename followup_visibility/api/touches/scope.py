"""The targets and actors of posted touches, resolved in the caller's scope."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.utils.translation import gettext as _

from followup_visibility.adapters import tenant_key
from followup_visibility.engine import access
from followup_visibility.ingest import targets
from followup_visibility.ingest.touches import NewTouch
from followup_visibility.models import TrackedOpportunity
from followup_visibility.registry import get_adapter, is_tracked


class ScopeErrors(Exception):
    """Items whose target or actor is missing or outside the caller's scope."""

    def __init__(self, errors: dict[tuple[int, str], list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass
class Parsed:
    """The validated items of one request, and their errors keyed ``(index, field)``."""

    items: list[dict[str, Any]]
    errors: dict[tuple[int, str], list[str]]

    def fail(self, index: int, name: str, message: str) -> None:
        self.errors.setdefault((index, name), []).append(message)


def _opportunities(parsed: Parsed, user: Any) -> dict[int, TrackedOpportunity]:
    """The named opportunities the caller sees, in one query; others fail as missing."""
    wanted = {
        i: item["opportunity"] for i, item in enumerate(parsed.items) if "opportunity" in item
    }
    if not wanted:
        return {}
    visible = access.opportunities_for(user).in_bulk(set(wanted.values()))
    found = {}
    for index, pk in wanted.items():
        if pk in visible:
            found[index] = visible[pk]
        else:
            parsed.fail(index, "opportunity", _("Opportunity %(pk)s does not exist.") % {"pk": pk})
    return found


def _host_objects(parsed: Parsed, user: Any) -> dict[int, models.Model]:
    """The named host objects, a query or two per model. One whose tracked record the caller
    does not see fails as missing; an untracked one (made without signals, tracked by the
    touch) only for a caller who sees every opportunity of its tenant, or who owns it."""
    by_model: dict[type[models.Model], dict[int, Any]] = defaultdict(dict)
    for index, item in enumerate(parsed.items):
        if "object" not in item:
            continue
        label, raw = item["object"]["model"], item["object"]["pk"]
        try:
            named: type[models.Model] | None = apps.get_model(label)
        except (LookupError, ValueError):
            named = None
        if named is None or not is_tracked(named):
            parsed.fail(
                index, "object.model", _("%(label)r is not a tracked model.") % {"label": label}
            )
            continue
        try:
            by_model[named][index] = named._meta.pk.to_python(raw)
        except (DjangoValidationError, TypeError, ValueError):
            parsed.fail(index, "object.pk", _missing_object(named, raw))
    unlimited = access.sees_everything(user)
    tenants = access.user_tenants(user)
    found: dict[int, models.Model] = {}
    for model, keys in by_model.items():
        adapter = get_adapter(model)
        objs = adapter.get_queryset().in_bulk(set(keys.values()))
        texts = {str(pk) for pk in objs}
        records = TrackedOpportunity.objects.for_model(model).filter(object_pk__in=texts)
        tracked = set(records.values_list("object_pk", flat=True))
        seen = set(access.restrict(records, user).values_list("object_pk", flat=True))
        for index, pk in keys.items():
            obj = objs.get(pk)
            if obj is None:
                allowed = False
            elif str(pk) in tracked:
                allowed = str(pk) in seen
            else:
                own = adapter.get_owner_id(obj) == user.pk
                in_tenant = tenants is None or tenant_key(adapter.get_tenant(obj)) in tenants
                allowed = own or (unlimited and in_tenant)
            if obj is not None and allowed:
                found[index] = obj
            else:
                parsed.fail(index, "object.pk", _missing_object(model, pk))
    return found


def _missing_object(model: type[models.Model], pk: object) -> str:
    return _("%(model)s %(pk)s does not exist.") % {"model": model._meta.label_lower, "pk": pk}


def _by_contact(parsed: Parsed, user: Any, now: Any) -> dict[int, TrackedOpportunity]:
    """For a caller who does not see everything: the opportunity each phone or email matches,
    which must be in their scope (as when ``record_touches`` matches it)."""
    if access.sees_everything(user) and access.user_tenants(user) is None:
        return {}  # ``record_touches`` matches them; nothing can be out of scope
    wanted = {
        i: targets.Wanted(None, item.get("phone") or None, item.get("email") or None)
        for i, item in enumerate(parsed.items)
        if "opportunity" not in item and "object" not in item
    }
    if not wanted:
        return {}
    try:
        found = targets.resolve(wanted, now)
    except DjangoValidationError as exc:
        # Only contacts nothing open matches: the other items' matches are asked again.
        failed = {int(key.partition(".")[0]) for key in exc.message_dict}
        for index in failed:
            parsed.fail(index, _contact_field(parsed.items[index]), _no_match())
        rest = {i: w for i, w in wanted.items() if i not in failed}
        found = targets.resolve(rest, now) if rest else {}
    visible = set(
        access.opportunities_for(user)
        .filter(pk__in={opp.pk for opp in found.values()})
        .values_list("pk", flat=True)
    )
    for index, opp in list(found.items()):
        if opp.pk not in visible:
            parsed.fail(index, _contact_field(parsed.items[index]), _no_match())
            del found[index]
    return found


def _no_match() -> str:
    return _("No open opportunity matches this phone or email.")


def _contact_field(item: Mapping[str, Any]) -> str:
    return "phone" if item.get("phone") else "email"


def _actors(parsed: Parsed, user: Any) -> dict[int, Any]:
    """Each item's actor: the caller by default, or a person they may log touches for."""
    named = {i: item["actor"] for i, item in enumerate(parsed.items) if "actor" in item}
    people = get_user_model().objects.in_bulk({pk for pk in named.values() if pk is not None})
    allowed: dict[Any, bool] = {}
    actors = {i: user for i in range(len(parsed.items)) if i not in named}
    for index, pk in named.items():
        if pk is None:
            actors[index] = None
            continue
        person = people.get(pk)
        if pk not in allowed:
            allowed[pk] = person is not None and access.manages_person(user, person)
        if allowed[pk]:
            actors[index] = person
        else:
            parsed.fail(
                index,
                "actor",
                _("User %(pk)s does not exist or is not one you manage.") % {"pk": pk},
            )
    return actors


def to_new_touches(items: Sequence[dict[str, Any]], user: Any, now: Any) -> list[NewTouch]:
    """The validated items as ``NewTouch`` with their targets and actors resolved in the
    caller's scope; :class:`ScopeErrors` keyed ``(index, field)`` otherwise (a few queries
    for the whole batch, whatever its size)."""
    parsed = Parsed(list(items), {})
    opportunities = _opportunities(parsed, user)
    objects = _host_objects(parsed, user)
    contacts = _by_contact(parsed, user, now)
    actors = _actors(parsed, user)
    if parsed.errors:
        raise ScopeErrors(parsed.errors)
    news = []
    for index, item in enumerate(parsed.items):
        target = opportunities.get(index) or objects.get(index) or contacts.get(index)
        news.append(
            NewTouch(
                channel=item["channel"],
                direction=item["direction"],
                outcome=item["outcome"],
                occurred_at=item["occurred_at"],
                recorded_at=item.get("recorded_at"),
                target=target,
                actor=actors[index],
                source=item["source"],
                external_id=item["external_id"],
                phone=item.get("phone") or None,
                email=item.get("email") or None,
                summary=item["summary"],
                metadata=item["metadata"],
            )
        )
    return news


def api_field(item: Mapping[str, Any], name: str) -> str:
    """The request's name for a field ``record_touches`` named."""
    if name == "target":
        return next((n for n in ("opportunity", "object") if n in item), _contact_field(item))
    if name == "contact":
        return _contact_field(item)
    return name


def keyed(errors: Mapping[tuple[int, str], list[str]], batch: bool) -> dict[str, list[str]]:
    """``(index, field)`` errors as the API names them: ``touches.3.occurred_at`` in a batch,
    ``occurred_at`` for one touch."""
    return {
        (f"touches.{index}.{name}" if batch else name): messages
        for (index, name), messages in sorted(errors.items())
    }
