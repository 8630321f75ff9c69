"""``touches/``: record touches, one or a batch, and read an opportunity's merged timeline.

Recording goes through ``ingest.touches.record_touches``: idempotent by ``(source,
external_id)``, every item validated before anything is written. The view only parses the
JSON, checks that each target is in the caller's scope (a target out of scope fails exactly
like a missing one) and says who the actor is (docs/api.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.adapters import tenant_key
from followup_visibility.api import base
from followup_visibility.api.errors import responses
from followup_visibility.api.register import OwnerSerializer
from followup_visibility.choices import Channel, Direction, Outcome
from followup_visibility.conf import app_settings
from followup_visibility.engine import access
from followup_visibility.engine.timeline import timeline
from followup_visibility.ingest import targets
from followup_visibility.ingest.touches import NewTouch, RecordedTouch, record_touches
from followup_visibility.models import Touch, TrackedOpportunity
from followup_visibility.registry import get_adapter, is_tracked

#: What became of each posted touch.
STATUSES = ("created", "repeat", "conflict")
#: ``source`` of a touch posted without one.
DEFAULT_SOURCE = "api"
#: The largest key a client may name (a bigint); larger ones are refused as input, not sent
#: to the database.
MAX_KEY = 2**63 - 1

# Serializers --------------------------------------------------------------------------------


class HostObjectInputSerializer(base.Strict):
    """A host object of a tracked model."""

    model = serializers.CharField(
        max_length=200, help_text="A tracked host model as `app_label.model`, e.g. `crm.lead`."
    )
    pk = serializers.CharField(max_length=64, help_text="The host object's primary key.")


class TouchInputSerializer(base.Strict):
    """One touch. Its target is ``opportunity`` or ``object``; without either, ``phone`` or
    ``email`` finds the open opportunity with that contact (and is kept as the contact)."""

    channel = serializers.ChoiceField(choices=Channel.choices)
    direction = serializers.ChoiceField(choices=Direction.choices)
    outcome = serializers.ChoiceField(choices=Outcome.choices, required=False, default="")
    occurred_at = base.Aware(help_text="When it happened (the customer's clock), with offset.")
    recorded_at = base.Aware(
        required=False, help_text="When it was logged; the request's time by default."
    )
    source = serializers.CharField(  # type: ignore[assignment]
        max_length=50,
        required=False,
        default=DEFAULT_SOURCE,
        help_text="The system it came from; with `external_id`, the key of idempotency.",
    )
    external_id = serializers.CharField(
        max_length=255, required=False, allow_blank=True, default=""
    )
    summary = serializers.CharField(required=False, allow_blank=True, default="")
    metadata = serializers.DictField(required=False, default=dict)
    opportunity = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_KEY, help_text="A tracked opportunity's id."
    )
    object = HostObjectInputSerializer(required=False, help_text="A host object instead.")
    phone = serializers.CharField(required=False, allow_blank=True, max_length=64)
    email = serializers.CharField(required=False, allow_blank=True, max_length=255)
    actor = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_KEY,
        help_text="Who made the touch: you by default; someone you manage (anyone, if you see "
        "every opportunity); null for nobody.",
    )

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        if _holds_nul(value):
            # PostgreSQL's jsonb cannot store it; refused here rather than by the database.
            raise ValidationError(_("Null characters are not allowed."))
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "opportunity" in attrs and "object" in attrs:
            raise ValidationError({"object": [_("Give an opportunity or an object, not both.")]})
        if not any(attrs.get(name) for name in ("opportunity", "object", "phone", "email")):
            raise ValidationError(
                {"target": [_("Give an opportunity, an object, a phone or an email.")]}
            )
        return attrs


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


class TouchBatchInputSerializer(base.Strict):
    """A batch of touches: validated whole, written whole or not at all."""

    touches = TouchInputSerializer(
        many=True, help_text="At most FOLLOWUP_VISIBILITY_API_MAX_BATCH touches."
    )


class TimelineTouchSerializer(serializers.Serializer[Touch]):
    """A touch as the timeline shows it."""

    id = serializers.IntegerField()
    opportunity = serializers.IntegerField(
        source="opportunity_id", help_text="The record it is on (the lead or the deal)."
    )
    channel = serializers.ChoiceField(choices=Channel.choices)
    direction = serializers.ChoiceField(choices=Direction.choices)
    outcome = serializers.ChoiceField(choices=Outcome.choices)
    occurred_at = serializers.DateTimeField()
    recorded_at = serializers.DateTimeField()
    logging_lag_seconds = serializers.SerializerMethodField(
        help_text="recorded_at - occurred_at, in seconds."
    )
    is_meaningful = serializers.BooleanField()
    meaningful_reason = serializers.CharField(help_text="Why it counted, or did not.")
    source = serializers.CharField()  # type: ignore[assignment]
    external_id = serializers.CharField()
    contact = serializers.CharField(help_text="The phone or email it was posted with.")
    actor = OwnerSerializer(allow_null=True)
    summary = serializers.CharField()
    metadata = serializers.DictField()

    def get_logging_lag_seconds(self, touch: Touch) -> float:
        return touch.logging_lag.total_seconds()


class BatchItemSerializer(serializers.Serializer[Any]):
    """What became of one touch of a batch."""

    index = serializers.IntegerField(help_text="The item's place in `touches`, from 0.")
    status = serializers.ChoiceField(choices=STATUSES)
    id = serializers.IntegerField(
        allow_null=True,
        help_text="The stored touch (the earlier one, for a repeat); null when that one is on "
        "an opportunity outside your scope.",
    )
    opportunity = serializers.IntegerField(allow_null=True)
    differs = serializers.ListField(
        child=serializers.CharField(),
        help_text="For a conflict: the fields in which it differs from the stored touch "
        "(`opportunity` when that one is outside your scope).",
    )


class TouchBatchResultSerializer(serializers.Serializer[Any]):
    """What became of each touch of a batch, in order, with the counts."""

    created = serializers.IntegerField()
    repeats = serializers.IntegerField()
    conflicts = serializers.IntegerField()
    results = BatchItemSerializer(many=True)


TOUCH_POST = PolymorphicProxySerializer(
    component_name="TouchPost",
    serializers=[TouchInputSerializer, TouchBatchInputSerializer],
    resource_type_field_name=None,
)
TOUCH_POSTED = PolymorphicProxySerializer(
    component_name="TouchPosted",
    serializers=[TimelineTouchSerializer, TouchBatchResultSerializer],
    resource_type_field_name=None,
)


class Oldest(base.Page):
    """A timeline in the customer's order, oldest first."""

    ordering = ("occurred_at", "id")  # type: ignore[assignment]


class TimelineQuerySerializer(serializers.Serializer[Any]):
    """The query of ``GET touches/``."""

    opportunity = serializers.IntegerField(
        min_value=1, max_value=MAX_KEY, help_text="The opportunity whose timeline to read."
    )


# Targets and actors in the caller's scope -----------------------------------------------------


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


def _api_field(item: Mapping[str, Any], name: str) -> str:
    """The request's name for a field ``record_touches`` named."""
    if name == "target":
        return next((n for n in ("opportunity", "object") if n in item), _contact_field(item))
    if name == "contact":
        return _contact_field(item)
    return name


def _keyed(errors: Mapping[tuple[int, str], list[str]], batch: bool) -> dict[str, list[str]]:
    """``(index, field)`` errors as the API names them: ``touches.3.occurred_at`` in a batch,
    ``occurred_at`` for one touch."""
    return {
        (f"touches.{index}.{name}" if batch else name): messages
        for (index, name), messages in sorted(errors.items())
    }


# The view -------------------------------------------------------------------------------------


def timeline_response(view: base.ApiViewSet, opportunity: TrackedOpportunity) -> Response:
    """A page of ``opportunity``'s merged timeline (its lead and deal, and the touches of
    duplicates merged into them), oldest first."""
    page = view.paginate_queryset(timeline(opportunity).select_related("actor"))
    assert page is not None
    data = TimelineTouchSerializer(page, many=True).data  # type: ignore[arg-type]
    return view.get_paginated_response(data)


class TouchViewSet(base.ApiViewSet):
    """Touches: ``POST`` one or a batch; ``GET ?opportunity=<id>`` its merged timeline."""

    serializer_class = TimelineTouchSerializer
    pagination_class = Oldest
    filter_backends: Any = []

    def get_queryset(self) -> QuerySet[Touch]:
        return Touch.objects.none()  # read through an opportunity's timeline only

    def get_permissions(self) -> Any:
        if self.action == "create":
            return [base.requires("add_touch")()]
        return super().get_permissions()

    def get_throttles(self) -> list[Any]:
        return [base.IngestThrottle()] if self.action == "create" else []

    @base.document(
        parameters=[TimelineQuerySerializer],
        responses={200: TimelineTouchSerializer(many=True), **responses(400, 404)},
    )
    def list(self, request: Request) -> Response:
        """An opportunity's merged timeline, oldest first."""
        query = TimelineQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        opportunity = get_object_or_404(
            access.opportunities_for(request.user), pk=query.validated_data["opportunity"]
        )
        return timeline_response(self, opportunity)

    @base.document(
        request=TOUCH_POST,
        responses={201: TOUCH_POSTED, 200: TOUCH_POSTED, **responses(400, 409, 413, 429)},
    )
    def create(self, request: Request) -> Response:
        """Record one touch (an object) or a batch (``{"touches": [...]}``)."""
        data = request.data
        if not isinstance(data, Mapping):
            raise ValidationError(
                {"non_field_errors": [_('Send one touch as an object, or {"touches": [...]}.')]}
            )
        batch = "touches" in data
        raw = data["touches"] if batch else [data]
        if batch:
            extra = sorted(set(data) - {"touches"})
            if extra:
                raise ValidationError({name: [_("Unknown field.")] for name in extra})
            if not isinstance(raw, list) or not raw:
                raise ValidationError({"touches": [_("Give a list of at least one touch.")]})
            if len(raw) > app_settings.API_MAX_BATCH:
                raise base.PayloadTooLarge(
                    _("%(n)d touches: at most %(max)d in one request.")
                    % {"n": len(raw), "max": app_settings.API_MAX_BATCH}
                )
        parser = TouchInputSerializer(data=raw, many=True)
        if not parser.is_valid():
            errors: Any = parser.errors
            raise ValidationError({"touches": errors} if batch else errors[0])
        items: list[dict[str, Any]] = list(parser.validated_data)
        try:
            news = to_new_touches(items, request.user, self.now)
            results = record_touches(news, now=self.now)
        except ScopeErrors as exc:
            raise ValidationError(_keyed(exc.errors, batch)) from None
        except DjangoValidationError as exc:
            found: dict[tuple[int, str], list[str]] = {}
            for key, messages in exc.message_dict.items():
                index, _dot, name = key.partition(".")
                if index.isdigit():
                    found[(int(index), _api_field(items[int(index)], name))] = messages
                else:
                    found[(0, key)] = messages
            raise ValidationError(_keyed(found, batch)) from None
        hidden = _stored_out_of_scope(results, request.user)
        if batch:
            return self._batch_response(results, hidden)
        return self._single_response(results[0], hidden)

    def _single_response(self, result: RecordedTouch, hidden: set[int]) -> Response:
        touch = result.touch
        if hidden:
            raise base.Conflict(
                _(
                    "A touch with source %(source)r and external id %(external_id)r is stored "
                    "on an opportunity outside your scope: it is not recorded again."
                )
                % {"source": touch.source, "external_id": touch.external_id}
            )
        if result.status == "conflict":
            raise base.Conflict(
                _(
                    "Touch %(id)s was stored with source %(source)r and external id "
                    "%(external_id)r, and other values of: %(fields)s. A repeat never changes "
                    "a stored touch."
                )
                % {
                    "id": touch.pk,
                    "source": touch.source,
                    "external_id": touch.external_id,
                    "fields": ", ".join(result.differs),
                }
            )
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(TimelineTouchSerializer(touch).data, status=code)

    def _batch_response(self, results: Sequence[RecordedTouch], hidden: set[int]) -> Response:
        items = [
            {
                "index": index,
                "status": result.status,
                "id": result.touch.pk,
                "opportunity": result.touch.opportunity_id,
                "differs": list(result.differs),
            }
            if index not in hidden
            else {
                "index": index,
                "status": "conflict",
                "id": None,
                "opportunity": None,
                "differs": ["opportunity"],
            }
            for index, result in enumerate(results)
        ]
        counts = {name: sum(i["status"] == name for i in items) for name in STATUSES}
        body = {
            "created": counts["created"],
            "repeats": counts["repeat"],
            "conflicts": counts["conflict"],
            "results": items,
        }
        code = status.HTTP_201_CREATED if counts["created"] else status.HTTP_200_OK
        return Response(TouchBatchResultSerializer(body).data, status=code)


def _stored_out_of_scope(results: Sequence[RecordedTouch], user: Any) -> set[int]:
    """The indexes of repeats whose stored touch is on an opportunity the caller does not see:
    ``(source, external_id)`` is one namespace, and a repeat must not show another scope's
    touch."""
    stored = {index: r.touch.opportunity_id for index, r in enumerate(results) if not r.created}
    if not stored or (access.sees_everything(user) and access.user_tenants(user) is None):
        return set()
    visible = set(
        access.opportunities_for(user)
        .filter(pk__in=set(stored.values()))
        .values_list("pk", flat=True)
    )
    return {index for index, pk in stored.items() if pk not in visible}
