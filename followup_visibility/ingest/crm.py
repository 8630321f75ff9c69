"""Keep tracked opportunities in step with host rows: on save, by backfill and by reconcile.

One batched function, ``sync_objects``, serves all three callers so that a row created by a
signal, a backfill or a reconcile ends up identical.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.utils.translation import gettext as _
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from followup_visibility.adapters import OpportunityAdapter, Snapshot
from followup_visibility.alerting import escalation, refresh
from followup_visibility.choices import Status
from followup_visibility.conf import app_settings
from followup_visibility.engine import routing
from followup_visibility.ingest import arguments, handoffs, identities, next_actions
from followup_visibility.models import TrackedOpportunity
from followup_visibility.registry import get_adapter, is_tracked
from followup_visibility.signals import opportunities_synced, send_on_commit

MIRRORED_FIELDS = [
    "title",
    "owner",
    "owner_confirmed_at",
    "unowned_since",
    "stage",
    "stage_entered_at",
    "status",
    "close_reason",
    "closed_at",
    "arrived_at",
    "value",
    "team_key",
    "segment_hints",
    "segment_code",
    "tenant",
    "next_action_due_at",
    "next_action_set_at",
    "next_action_done_at",
    "predecessor",
    "chain_root",
    "team",
    "segment",
    "segment_source",
    "snapshot_digest",
    "synced_at",
]

# Statuses we set ourselves; the host's view no longer applies to these records.
_OUR_CLOSED = frozenset({Status.MERGED})
# Records a vanished host row does not turn into ``DELETED``.
_NOT_DELETABLE = [Status.DELETED, *_OUR_CLOSED]


@dataclass
class SyncResult:
    created: list[Any] = field(default_factory=list)
    updated: list[Any] = field(default_factory=list)
    unchanged: int = 0

    def __iadd__(self, other: SyncResult) -> SyncResult:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


def sync_objects(
    objs: Sequence[models.Model], now: datetime, *, confirm_owners: bool = False
) -> SyncResult:
    """Create or update the tracked opportunities of host objects of one tracked model.

    Rows whose snapshot digest is unchanged are skipped. Owner changes open handoffs (stored as
    accepted with ``confirm_owners``), contact identities are refreshed and duplicates
    detected, all in the caller's transaction. A naive ``now`` or an unsaved object raises
    ``ValidationError`` (keyed ``now`` or ``objs``) and writes nothing.
    """
    arguments.require_aware(now=now)
    arguments.require_saved(objs, "objs")
    result = SyncResult()
    if not objs:
        return result
    adapter = get_adapter(type(objs[0]))
    ct = ContentType.objects.get_for_model(adapter.model)
    snapshots = {str(obj.pk): (obj, adapter.snapshot(obj)) for obj in objs}
    with transaction.atomic():
        mine = TrackedOpportunity.objects.filter(content_type=ct, object_pk__in=list(snapshots))
        # Their whole chains, in key order, as every writer of opportunities locks them (the
        # refresh at the end locks the chains too): two writers never deadlock.
        ids = refresh.lock(mine.values_list("pk", flat=True))
        existing = {
            opp.object_pk: opp
            for opp in TrackedOpportunity.objects.filter(pk__in=ids, content_type=ct)
            if opp.object_pk in snapshots
        }
        new, changed, owner_changes, identity_refresh = [], [], [], []
        for pk, (_obj, snap) in snapshots.items():
            opp = existing.get(pk)
            digest = snap.digest()
            if opp is not None and opp.snapshot_digest == digest:
                result.unchanged += 1
                continue
            if opp is None:
                opp = TrackedOpportunity(content_type=ct, object_pk=pk)
                new.append(opp)
            else:
                changed.append(opp)
            old_owner = opp.owner_id
            _apply(opp, snap, now, is_new=opp in new)
            if opp.owner_id != old_owner:
                if confirm_owners and opp.owner_id is not None:
                    opp.owner_confirmed_at = now
                owner_changes.append((opp, old_owner, opp.owner_id))
            identity_refresh.append((opp, snap))
        relinked = _link_predecessors(
            adapter, snapshots, new + changed, now, confirm_owners=confirm_owners
        )
        teams_before = {opp.pk: opp.team_id for opp in changed}
        # Routed here, before the write, so that the history rows show the team and segment.
        routing.assign(new + changed)
        # A host date is due at the end of that business day: in the calendar just routed to.
        next_actions.apply_host_dates(
            [(opp, snapshots[opp.object_pk][1], teams_before.get(opp.pk)) for opp in new + changed],
            now,
        )
        bulk_create_with_history(new, TrackedOpportunity, default_date=now)
        if changed:
            bulk_update_with_history(changed, TrackedOpportunity, MIRRORED_FIELDS, default_date=now)
            moved = [opp.pk for opp in changed if opp.team_id != teams_before[opp.pk]]
            if moved:
                # Another team may have another escalation policy and calendar: plan again.
                escalation.replan_opportunities(moved)
        handoffs.record_owner_changes(owner_changes, now, confirmed=confirm_owners)
        identities.refresh(identity_refresh, now)
        refresh.refresh(
            [opp.pk for opp in new + changed],
            now=now,
            # A relinked deal's chain brings the lead's touches (its calls) into its timeline.
            cause=refresh.Cause(_("changed in the CRM"), timeline=bool(relinked), identities=True),
        )
        result.created = [opp.pk for opp in new]
        result.updated = [opp.pk for opp in changed]
        if new or changed:
            send_on_commit(
                opportunities_synced,
                TrackedOpportunity,
                created=result.created,
                updated=result.updated,
            )
    return result


def _apply(opp: TrackedOpportunity, snap: Snapshot, now: datetime, *, is_new: bool) -> None:
    opp.title = snap.title
    if snap.owner_id != opp.owner_id:
        opp.owner_confirmed_at = None
        if snap.owner_id is None and opp.owner_id is not None:
            opp.unowned_since = now
    opp.owner_id = snap.owner_id
    if is_new or snap.stage != opp.stage:
        opp.stage_entered_at = now
    opp.stage = snap.stage
    if opp.status not in _OUR_CLOSED:
        was_open = is_new or opp.status == Status.OPEN
        opp.status = snap.status
        if snap.status == Status.OPEN:
            opp.closed_at = None
        elif was_open:
            opp.closed_at = now
    opp.close_reason = snap.close_reason
    opp.arrived_at = snap.arrived_at
    opp.value = snap.value
    opp.team_key = snap.team_key
    opp.segment_hints = dict(snap.segment_hints)
    opp.segment_code = snap.segment_code
    opp.tenant = snap.tenant
    # The host's dated next step wins when it has one; otherwise ours (set via the API) stays.
    # A date (not a datetime) is dated once routing has chosen the calendar: apply_host_dates.
    due = snap.next_action_due_at
    if isinstance(due, datetime) and due != opp.next_action_due_at:
        opp.next_action_due_at = due
        opp.next_action_set_at = now
        opp.next_action_done_at = None
    opp.snapshot_digest = snap.digest()
    opp.synced_at = now


def _link_predecessors(
    adapter: OpportunityAdapter,
    snapshots: dict[str, tuple[models.Model, Snapshot]],
    opps: list[TrackedOpportunity],
    now: datetime,
    *,
    confirm_owners: bool,
) -> list[TrackedOpportunity]:
    """Attach deals to the tracked record of the lead they were converted from.

    A predecessor not tracked yet is synced on the fly, as the caller syncs (a backfill confirms
    its owner too); one of a model that is not tracked at all is ignored. Returns the records
    whose chain changed.
    """
    if adapter.predecessor_field is None and type(adapter).get_predecessor is (
        OpportunityAdapter.get_predecessor
    ):
        return []
    wanted: dict[type[models.Model], dict[str, models.Model]] = defaultdict(dict)
    by_opp = {}
    for opp in opps:
        predecessor = adapter.get_predecessor(snapshots[opp.object_pk][0])
        if predecessor is not None and is_tracked(type(predecessor)):
            wanted[type(predecessor)][str(predecessor.pk)] = predecessor
            by_opp[opp.object_pk] = (type(predecessor), str(predecessor.pk))
    tracked: dict[tuple[type[models.Model], str], TrackedOpportunity] = {}
    for model, objs in wanted.items():
        found = TrackedOpportunity.objects.for_model(model).filter(object_pk__in=list(objs))
        missing = [obj for pk, obj in objs.items() if pk not in {t.object_pk for t in found}]
        sync_objects(missing, now, confirm_owners=confirm_owners)
        for opp in TrackedOpportunity.objects.for_model(model).filter(object_pk__in=list(objs)):
            tracked[(model, opp.object_pk)] = opp
    relinked = []
    for opp in opps:
        key = by_opp.get(opp.object_pk)
        predecessor_opp = tracked.get(key) if key else None
        old_root = opp.chain_root_id
        opp.predecessor = predecessor_opp
        opp.chain_root_id = predecessor_opp.root_id if predecessor_opp else None
        if opp.chain_root_id != old_root:
            relinked.append(opp)
    return relinked


def mark_deleted(model: type[models.Model], pks: Sequence[Any], now: datetime) -> int:
    """The host rows are gone: close their tracked records (history and touches are kept).

    A record closed earlier keeps its ``closed_at``; a merged one stays merged, so that what
    still reaches it is redirected to its survivor.
    """
    arguments.require_aware(now=now)
    opps = TrackedOpportunity.objects.for_model(model).filter(object_pk__in=[str(pk) for pk in pks])
    with transaction.atomic():
        return _close_deleted(opps, now)


def _close_deleted(opps: Any, now: datetime) -> int:
    # The chains, in key order, as every writer locks them; then the rows as locked.
    locked = refresh.lock(opps.values_list("pk", flat=True))
    closing = list(
        TrackedOpportunity.objects.filter(pk__in=locked)
        .filter(pk__in=opps.values("pk"))
        .exclude(status__in=_NOT_DELETABLE)
        .order_by("pk")
    )
    if not closing:
        return 0
    for opp in closing:
        opp.status = Status.DELETED
        opp.closed_at = opp.closed_at or now
    # With history: a record deleted in the CRM is a change someone made.
    bulk_update_with_history(
        closing,
        TrackedOpportunity,
        ["status", "closed_at"],
        default_date=now,
        default_change_reason=_("deleted in the CRM"),
    )
    ids = [opp.pk for opp in closing]
    identities.clear_duplicates(ids, now)
    refresh.refresh(ids, now=now, cause=refresh.Cause(_("deleted in the CRM"), identities=True))
    return len(closing)


Progress = Callable[[int, int], None]


def sync_model(
    model: type[models.Model],
    now: datetime,
    *,
    confirm_owners: bool = False,
    chunk_size: int | None = None,
    progress: Progress | None = None,
) -> SyncResult:
    """Read every host row of ``model`` in key order, one transaction per chunk.

    Backfill and reconcile both use it: unchanged rows cost a digest comparison, and an
    interrupted run can simply be started again.
    """
    arguments.require_aware(now=now)
    adapter = get_adapter(model)
    size = chunk_size or app_settings.SYNC_CHUNK_SIZE
    queryset = adapter.get_queryset().order_by("pk")
    total = queryset.count()
    result, done, last_pk = SyncResult(), 0, None
    while True:
        chunk = queryset if last_pk is None else queryset.filter(pk__gt=last_pk)
        objs = list(chunk[:size])
        if not objs:
            break
        result += sync_objects(objs, now, confirm_owners=confirm_owners)
        done += len(objs)
        last_pk = objs[-1].pk
        if progress:
            progress(done, total)
    return result


def reconcile_deleted(
    model: type[models.Model], now: datetime, *, chunk_size: int | None = None
) -> int:
    """Close tracked records whose host row vanished without a signal (e.g. a raw delete).

    Vanished from the adapter's ``get_queryset()`` (the base manager by default), never from
    the default manager, which may filter by the current request's company.
    """
    arguments.require_aware(now=now)
    size = chunk_size or app_settings.SYNC_CHUNK_SIZE
    host_rows = get_adapter(model).get_queryset()
    pk_field = model._meta.pk
    assert pk_field is not None
    tracked = TrackedOpportunity.objects.for_model(model).exclude(status__in=_NOT_DELETABLE)
    closed, last = 0, 0
    while True:
        rows = list(
            tracked.filter(pk__gt=last).order_by("pk").values_list("pk", "object_pk")[:size]
        )
        if not rows:
            return closed
        last = rows[-1][0]
        keys = {pk_field.to_python(object_pk) for _pk, object_pk in rows}
        present = set(host_rows.filter(pk__in=keys).values_list("pk", flat=True))
        gone = [key for key in keys if key not in present]
        if gone:
            with transaction.atomic():
                closed += mark_deleted(model, gone, now)
