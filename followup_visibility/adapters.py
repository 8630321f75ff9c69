"""Adapters: how the app reads a tracked host model without changing it.

A host registers one adapter class per tracked model in ``FOLLOWUP_VISIBILITY_TRACKED_MODELS``.
The defaults read conventionally named fields; override attributes for other field names and
methods for anything computed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext as _

from followup_visibility.choices import Status


@dataclass(frozen=True)
class Snapshot:
    """What the host knows about one opportunity, as read through its adapter."""

    title: str
    owner_id: Any
    stage: str
    status: str
    close_reason: str
    arrived_at: datetime
    value: Decimal | None
    team_key: str
    segment_hints: Mapping[str, str] = field(default_factory=dict)
    segment_code: str = ""
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    #: A ``date`` (the host keeps a ``DateField``) is due at the end of that business day.
    next_action_due_at: datetime | date | None = None
    #: ``"app_label.model:pk"`` of the predecessor, so that relinking a deal counts as a change.
    predecessor: str = ""
    #: The host company the object belongs to (``""``: the host keeps one company).
    tenant: str = ""

    def digest(self) -> str:
        """A stable hash, so reconcile can skip rows whose host state has not moved.

        Values are canonical: an in-memory ``Decimal("10")`` and the ``Decimal("10.00")`` read
        back from the database, or one instant in two time zones, hash the same.
        """
        fields = asdict(self)
        if not fields["tenant"]:
            # Hashed as before tenants existed: a single-company host resyncs nothing.
            del fields["tenant"]
        payload = json.dumps(fields, sort_keys=True, default=_canonical)
        return hashlib.sha256(payload.encode()).hexdigest()


def _canonical(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


class OpportunityAdapter:
    """Reads owner, stage, status, arrival, value, team, segment hints and contact identity.

    Subclass it per tracked model. Attributes name host fields; set one to ``None`` when the host
    has no such field. Methods may be overridden freely; they must not write to the database,
    except :meth:`set_owner`, the one write the app asks of the host.
    """

    owner_field: str | None = "owner"
    stage_field: str | None = "stage"
    status_field: str | None = "status"
    #: Maps host status values to ``Status`` values; unmapped values count as open.
    status_map: Mapping[Any, str] = {}
    close_reason_field: str | None = None
    arrived_at_field: str = "created_at"
    value_field: str | None = None
    team_field: str | None = None
    phone_fields: tuple[str, ...] = ()
    email_fields: tuple[str, ...] = ()
    next_action_field: str | None = None
    #: Host fields copied into ``segment_hints`` (for segment rules), e.g. ``("source",)``.
    segment_hint_fields: tuple[str, ...] = ()
    #: Host field holding a segment code directly (matched to ``Segment.code``); wins over rules.
    segment_field: str | None = None
    #: FK on this model to the host object it was converted from (a deal's lead).
    predecessor_field: str | None = None
    #: Field naming the company (tenant) a row belongs to, on hosts that keep several in one
    #: database: a foreign key is read as its key (``<field>_id``), anything else as text.
    tenant_field: str | None = None

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model

    def get_queryset(self) -> models.QuerySet[Any]:
        """The host rows that exist for the app: backfill and reconcile sync them, and
        reconcile closes as deleted a tracked record whose row this leaves out.

        The base manager by default, never the default manager: a default manager may filter
        by the current request's company (or hide soft-deleted rows), and a reconcile run
        inside that request must still see every row. Override it to leave rows out.
        """
        return self.model._base_manager.all()

    def get_title(self, obj: Any) -> str:
        return str(obj)[:255]

    def get_owner_id(self, obj: Any) -> Any:
        """Primary key of the owning user, or ``None`` when unassigned."""
        if self.owner_field is None:
            return None
        return getattr(obj, f"{self.owner_field}_id", None)

    def set_owner(self, obj: Any, user: Any) -> None:
        """Make ``user`` (``None``: nobody) the owner of the host object ``obj``, in the CRM.

        The CRM is the system of record for owners: reassigning from the app (the API's
        ``reassign``) writes here, then syncs ``obj`` as any CRM change is synced. The default
        sets ``owner_field`` the way :meth:`get_owner_id` reads it (``<owner_field>_id``) and
        saves that field only, so the host's ``save()`` and signals run. Override it when the
        owner lives elsewhere (a CRM's own API, an assignment table); raise
        ``ValidationError`` (keyed ``owner``) to refuse. With ``owner_field = None`` it refuses.
        """
        if self.owner_field is None:
            message = _("This CRM record has no owner the app can change.")
            raise ValidationError({"owner": ValidationError(message, code="no_owner_field")})
        setattr(obj, f"{self.owner_field}_id", getattr(user, "pk", None))
        obj.save(update_fields=[self.owner_field])

    def get_stage(self, obj: Any) -> str:
        return str(getattr(obj, self.stage_field) or "") if self.stage_field else ""

    def get_status(self, obj: Any) -> str:
        """One of ``Status.OPEN/WON/LOST/DISQUALIFIED/CONVERTED``."""
        if self.status_field is None:
            return Status.OPEN
        raw = getattr(obj, self.status_field)
        mapped = self.status_map.get(raw, raw)
        host_statuses = {
            Status.OPEN,
            Status.WON,
            Status.LOST,
            Status.DISQUALIFIED,
            Status.CONVERTED,
        }
        return str(mapped) if mapped in host_statuses else Status.OPEN

    def get_close_reason(self, obj: Any) -> str:
        if self.close_reason_field is None:
            return ""
        return str(getattr(obj, self.close_reason_field) or "")[:255]

    def get_arrived_at(self, obj: Any) -> datetime:
        """When the demand arrived: the clock start of first-response and ownership SLAs."""
        value: datetime = getattr(obj, self.arrived_at_field)
        return value

    def get_value(self, obj: Any) -> Decimal | None:
        if self.value_field is None:
            return None
        raw = getattr(obj, self.value_field)
        return None if raw is None else Decimal(raw)

    def get_team_key(self, obj: Any) -> str:
        """A key naming the owning team (matched to teams by their ``key``)."""
        return str(getattr(obj, self.team_field) or "") if self.team_field else ""

    def get_segment_hints(self, obj: Any) -> dict[str, str]:
        return {name: str(getattr(obj, name) or "") for name in self.segment_hint_fields}

    def get_segment_code(self, obj: Any) -> str:
        """A ``Segment.code`` the host assigns itself, or ``""`` to let segment rules decide."""
        return str(getattr(obj, self.segment_field) or "") if self.segment_field else ""

    def get_phones(self, obj: Any) -> tuple[str, ...]:
        return _non_empty(getattr(obj, name) for name in self.phone_fields)

    def get_emails(self, obj: Any) -> tuple[str, ...]:
        return _non_empty(getattr(obj, name) for name in self.email_fields)

    def get_next_action_due_at(self, obj: Any) -> datetime | date | None:
        """The host's dated next step, if it keeps one: an aware datetime, or a date, which is
        due at the end of that business day in the opportunity's calendar."""
        if self.next_action_field is None:
            return None
        value: datetime | date | None = getattr(obj, self.next_action_field)
        return value

    def get_predecessor(self, obj: Any) -> models.Model | None:
        """The host object this one continues (a lead converted into this deal)."""
        if self.predecessor_field is None:
            return None
        value: models.Model | None = getattr(obj, self.predecessor_field)
        return value

    def get_tenant(self, obj: Any) -> str:
        """The company (tenant) ``obj`` belongs to, as text; ``""`` when ``tenant_field`` is
        ``None``. Scope and notifications compare it with the user's tenants
        (``FOLLOWUP_VISIBILITY_USER_TENANTS``)."""
        if self.tenant_field is None:
            return ""
        field = self.model._meta.get_field(self.tenant_field)
        # A foreign key by its key: reading the related company would cost a query per row.
        name = field.attname if isinstance(field, models.ForeignKey) else self.tenant_field
        value = getattr(obj, name)
        return "" if value is None else str(value)

    def get_predecessor_key(self, obj: Any) -> str:
        predecessor = self.get_predecessor(obj)
        return "" if predecessor is None else f"{predecessor._meta.label_lower}:{predecessor.pk}"

    def snapshot(self, obj: Any) -> Snapshot:
        return Snapshot(
            title=self.get_title(obj),
            owner_id=self.get_owner_id(obj),
            stage=self.get_stage(obj)[:100],
            status=self.get_status(obj),
            close_reason=self.get_close_reason(obj),
            arrived_at=self.get_arrived_at(obj),
            value=self.get_value(obj),
            team_key=self.get_team_key(obj)[:100],
            segment_hints=self.get_segment_hints(obj),
            segment_code=self.get_segment_code(obj)[:50],
            phones=self.get_phones(obj),
            emails=self.get_emails(obj),
            next_action_due_at=self.get_next_action_due_at(obj),
            predecessor=self.get_predecessor_key(obj),
            tenant=tenant_key(self.get_tenant(obj)),
        )


def tenant_key(value: Any) -> str:
    """A tenant as stored (``TrackedOpportunity.tenant``, 64 characters): its text, or the
    SHA-256 of a longer text, since cutting two long keys could make them one tenant."""
    text = str(value)
    return text if len(text) <= 64 else hashlib.sha256(text.encode()).hexdigest()


def _non_empty(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(str(v).strip() for v in values if v and str(v).strip())
