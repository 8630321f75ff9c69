"""Reassigning an opportunity from the app: written to the CRM, then synced back from it.

The CRM is the system of record for owners. The app never writes ``TrackedOpportunity.owner``
itself: :func:`reassign` asks the adapter to change the host object
(:meth:`~followup_visibility.adapters.OpportunityAdapter.set_owner`) and brings the tracked
record up to date through :func:`~followup_visibility.ingest.crm.sync_objects`, the path every
CRM change takes. The sync opens the handoff to the new owner and refreshes the opportunity,
so the no-owner and ownership alerts move as for an owner changed in the CRM.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from followup_visibility.choices import Status
from followup_visibility.engine import access
from followup_visibility.ingest import arguments, crm
from followup_visibility.models import TrackedOpportunity
from followup_visibility.registry import get_adapter


def _refused() -> ValidationError:
    # One message for an unknown, inactive or unmanaged person: it tells nothing about who
    # exists outside the caller's teams.
    return ValidationError(
        {
            "owner": ValidationError(
                _(
                    "Choose an active user you may hand work to: yourself or someone in a team "
                    "you manage."
                ),
                code="not_yours",
            )
        }
    )


def check_target(by: Any, to: Any) -> None:
    """Refuse (``ValidationError`` on ``owner``) a new owner ``by`` may not hand work to.

    ``to`` must be active and be ``by`` or a member of a team ``by`` manages (or a team below
    it); a user who sees everything may pick anyone of their tenants
    (:func:`~followup_visibility.engine.access.manages_person`).
    """
    if to is None or not to.is_active or not access.manages_person(by, to):
        raise _refused()


def find_target(by: Any, pk: Any) -> Any:
    """The user with key ``pk``, if ``by`` may hand work to them; refused as
    :func:`check_target` refuses, an unknown key included."""
    to = get_user_model()._default_manager.filter(pk=pk).first()
    check_target(by, to)
    return to


def reassign(
    opportunity: TrackedOpportunity, *, to: Any, by: Any, now: datetime
) -> TrackedOpportunity:
    """Make ``to`` the owner of ``opportunity`` in the CRM, then sync it; the fresh record.

    Refused (``ValidationError``, nothing written): a new owner ``by`` may not hand work to
    (keyed ``owner``, see :func:`check_target`), an opportunity that is closed or whose CRM
    record is gone (not keyed: the opportunity's state, not the input, is at fault), or
    what the adapter's ``set_owner`` refuses. Reassigning to the current owner changes
    nothing. On a host whose saves are synced by the app's receiver the save itself syncs and
    the call here finds nothing left to do; a ``set_owner`` that writes without a ``save()``
    is synced here.
    """
    arguments.require_aware(now=now)
    check_target(by, to)
    with transaction.atomic():
        # Not locked here: the host row is written first and the sync then locks the chain,
        # the order of every CRM save (locking the chain first could deadlock with one).
        fresh = TrackedOpportunity.objects.filter(pk=opportunity.pk).first()
        if fresh is None:
            raise ValidationError({"opportunity": arguments.missing_message(opportunity)})
        if fresh.status != Status.OPEN:
            raise ValidationError(
                _("Only an open opportunity can be reassigned; this one is %(s)s.")
                % {"s": fresh.get_status_display().lower()},
                code="not_open",
            )
        model = fresh.content_type.model_class()
        if model is None:
            raise ValidationError(_("The CRM record of this opportunity is gone."), code="gone")
        adapter = get_adapter(model)
        pk_field = model._meta.pk
        assert pk_field is not None
        obj = adapter.get_queryset().filter(pk=pk_field.to_python(fresh.object_pk)).first()
        if obj is None:
            raise ValidationError(_("The CRM record of this opportunity is gone."), code="gone")
        if adapter.get_owner_id(obj) != to.pk:
            adapter.set_owner(obj, to)
            crm.sync_objects([obj], now)
    return TrackedOpportunity.objects.get(pk=opportunity.pk)
