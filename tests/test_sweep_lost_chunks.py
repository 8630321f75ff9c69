"""Chunks of a full pass lost with a worker are issued again by the next pass, not an hour
later when the broker's visibility timeout gives them back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from followup_visibility import tasks
from followup_visibility.alerting import sweep
from followup_visibility.alerting.sweep import Chunk
from followup_visibility.models import Alert, Calendar, Deadline, SweepRun, WorkingWindow
from tests.factories_sla import install_defaults, lead_at, opportunity

T1 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a full pass starts
AFTER = timedelta(minutes=10)
MINUTE = timedelta(minutes=1)
LATER = T1 + AFTER + MINUTE


def full_run(*, done: tuple[int, ...] = (), finished: bool = False, at: datetime = T1) -> SweepRun:
    """A full pass over keys 1-6 in three chunks, ``done`` (first keys) already run."""
    ranges = [[1, 2], [3, 4], [5, 6]]
    return SweepRun.objects.create(
        started_at=at,
        swept_until=at,
        full=True,
        chunks=len(ranges),
        chunks_done=len(done),
        done_ranges=list(done),
        ranges=ranges,
        finished_at=at if finished else None,
    )


def test_the_undone_chunks_of_an_old_unfinished_pass_are_lost(
    db: Any, django_assert_max_num_queries: Any
) -> None:
    run = full_run(done=(3,))
    # Most ticks find nothing, in one query.
    with django_assert_max_num_queries(1):
        assert sweep.lost_chunks(T1 + AFTER - MINUTE, after=AFTER) == []
    with django_assert_max_num_queries(5):
        lost = sweep.lost_chunks(LATER, after=AFTER)
    # Each to run for the clock its pass started with.
    assert lost == [Chunk(run.pk, 1, 2, T1), Chunk(run.pk, 5, 6, T1)]
    run.refresh_from_db()
    issued = LATER.isoformat()
    assert run.ranges == [[1, 2, issued], [3, 4], [5, 6, issued]]


def test_a_chunk_issued_again_is_not_issued_again_before_another_wait(db: Any) -> None:
    run = full_run(done=(3,))
    assert len(sweep.lost_chunks(LATER, after=AFTER)) == 2
    # The next ticks (and a second pass on the same tick) leave them to the worker.
    assert sweep.lost_chunks(LATER, after=AFTER) == []
    assert sweep.lost_chunks(LATER + AFTER - MINUTE, after=AFTER) == []
    # Lost again: issued again, once per wait, and only what is still undone.
    SweepRun.objects.filter(pk=run.pk).update(done_ranges=[3, 5], chunks_done=2)
    assert sweep.lost_chunks(LATER + AFTER, after=AFTER) == [Chunk(run.pk, 1, 2, T1)]


@pytest.mark.parametrize(
    ("runs", "why"),
    [
        (lambda: full_run(done=(3,), at=T1 + 2 * MINUTE), "started less than the wait ago"),
        (lambda: full_run(done=(1, 3, 5), finished=True), "finished"),
        # A later full pass covers every due deadline this one would have: nothing is owed.
        (lambda: (full_run(done=(3,)), full_run(finished=True, at=T1 + MINUTE)), "superseded"),
        (lambda: (full_run(done=(3,)), full_run(at=T1 + 5 * MINUTE)), "superseded, running"),
        (lambda: SweepRun.objects.create(started_at=T1, swept_until=T1, full=True), "no ranges"),
    ],
)
def test_nothing_is_lost(db: Any, runs: Callable[[], Any], why: str) -> None:
    runs()
    assert sweep.lost_chunks(LATER, after=AFTER) == [], why


def test_steady_passes_after_it_do_not_hide_a_lost_full_pass(db: Any) -> None:
    run = full_run(done=(1, 3))
    SweepRun.objects.create(started_at=LATER, swept_until=LATER, finished_at=LATER, full=False)
    assert sweep.lost_chunks(LATER, after=AFTER) == [Chunk(run.pk, 5, 6, T1)]


def test_the_wait_is_longer_than_the_chunk_tasks_hard_time_limit() -> None:
    # Shorter, and every chunk still running would be issued twice.
    hard_limit = timedelta(seconds=tasks.sweep_chunk.time_limit)
    assert hard_limit < sweep.LOST_AFTER


# With deadlines: the pass, the task and the command -----------------------------------------


@pytest.fixture
def three_due(db: Any) -> list[int]:
    """Three opportunities whose deadlines fell due long before ``T1`` (24/7 UTC)."""
    install_defaults(time_zone="UTC")
    calendar = Calendar.objects.get(is_default=True)
    WorkingWindow.objects.filter(calendar=calendar).delete()
    WorkingWindow.objects.bulk_create(
        WorkingWindow(
            calendar=calendar, weekday=day, start=datetime.min.time(), end=datetime.min.time()
        )
        for day in range(7)
    )
    leads = [lead_at(T1 - timedelta(days=1)) for _ in range(3)]
    # The last pass ran just before T1 and yet no alert is there (deleted by hand, say): the
    # steady passes after it raise nothing, only a full one repairs that.
    before = T1 - MINUTE
    SweepRun.objects.create(started_at=before, swept_until=before, finished_at=before)
    assert not Deadline.objects.filter(due_at__gt=before - sweep.OVERLAP).exists()
    return sorted(opportunity(lead).pk for lead in leads)


def lose_all_but_the_first_chunk(settings: Any) -> SweepRun:
    """A full pass at ``T1`` whose first chunk ran and whose other two went with a worker."""
    settings.FOLLOWUP_VISIBILITY_SWEEP_CHUNK_SIZE = 1
    started = sweep.start(T1, full=True)
    assert started is not None
    run, work = started
    assert len(work) == 3
    sweep.run_chunk(run.pk, *work[0], T1)
    run.refresh_from_db()
    assert run.ranges == [list(chunk) for chunk in work]  # recorded when the pass started
    assert run.finished_at is None
    return run


def due_without_alert() -> int:
    return sweep.consistency(T1)["due_without_alert"]


def test_the_sweep_task_issues_lost_chunks_again(three_due: list[int], settings: Any) -> None:
    run = lose_all_but_the_first_chunk(settings)
    assert due_without_alert() > 0
    # Eager in the test settings: the chunks issued again run here.
    result = tasks.sweep_pass.delay(now=(T1 + AFTER - MINUTE).isoformat()).get()
    assert result["reissued"] == 0
    result = tasks.sweep_pass.delay(now=LATER.isoformat()).get()
    assert result["reissued"] == 2
    assert SweepRun.objects.get(started_at=LATER).raised == 0  # the chunks raised them
    run.refresh_from_db()
    assert (run.chunks_done, run.finished_at) == (3, T1)
    assert due_without_alert() == 0
    assert Alert.objects.count() == Deadline.objects.filter(due_at__lte=T1).count()


def test_the_sweep_task_takes_its_clock_as_a_parameter(three_due: list[int]) -> None:
    result = tasks.sweep_pass.delay(full=True, now=T1.isoformat()).get()
    run = SweepRun.objects.get(pk=result["run"])
    assert (run.started_at, run.finished_at, run.chunks_done) == (T1, T1, result["chunks"])
    with pytest.raises(ValueError, match="no UTC offset"):
        tasks.sweep_pass.delay(now="2026-03-03T10:00:00").get()


def test_the_sweep_command_finishes_lost_chunks_in_process(
    three_due: list[int], settings: Any
) -> None:
    run = lose_all_but_the_first_chunk(settings)
    out = StringIO()
    call_command("followup_sweep", "--now", LATER.isoformat(), stdout=out)
    assert f"full pass {run.pk}: 2 chunks left undone by a lost worker, run here" in out.getvalue()
    run.refresh_from_db()
    assert (run.chunks_done, run.finished_at) == (3, T1)
    assert due_without_alert() == 0
    # Done: the next run has nothing left to finish.
    out = StringIO()
    call_command("followup_sweep", "--now", (LATER + AFTER).isoformat(), stdout=out)
    assert "lost worker" not in out.getvalue()
