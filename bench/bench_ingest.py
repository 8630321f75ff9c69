"""Touch ingestion on PostgreSQL: touches recorded one at a time, as a webhook delivers them.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/followup_bench \\
        .venv/bin/python bench/bench_ingest.py [--opportunities N] [--touches N]
        [--repeats N] [--query-sample N] [--batch-size N] [--batches N]

DROPS AND RECREATES the database named in DATABASE_URL (the name must contain "bench"), migrates
it (which creates the default calendar and the company-default SLA policy) and seeds it with raw
``INSERT ... SELECT generate_series`` (not through host models): N open tracked opportunities of
``crm.Lead`` (arrivals over six weeks, owners among 40 reps, three teams and some without one)
and 0 to 3 earlier touches each, a quarter of them each count: the customer's inbound email at
arrival, our unanswered call a few hours later, our email the next day. The derived timeline
fields are then set with ``timeline.fold`` over those touches (so they are what ``record_touch``
would have left), every deadline is computed by ``recompute.recompute_all`` as the Celery
tasks would, and one first sweep raises the alerts due, so that a touch finds the deadlines and
alerts it moves and resolves in production. VACUUM ANALYZE and a CHECKPOINT end the setup.

Measured, the clock moving one second per touch from shortly after the sweep:

- ``record_touch`` called once per touch on ``--touches`` (2,000) distinct opportunities, in
  autocommit, each call its own transaction, as a telephony or mail webhook would; a mix of
  outbound calls connected and unanswered, inbound emails and outbound emails. Printed:
  touches/s, p50/p95/max latency. Targets are given opportunities, as a webhook that has looked
  its record up already (attaching by phone or email costs more queries);
- the SQL queries per touch, counted with ``CaptureQueriesContext`` over a separate sample of
  ``--query-sample`` (50) touches on other opportunities (the timed run captures nothing);
- repeat deliveries: the first ``--repeats`` (1,000) touches of the timed run sent again with
  the same source and external id (each returns the stored touch), per second;
- batch ingestion, when this version offers ``record_touches``: ``--batches`` (10) batches of
  ``--batch-size`` (1,000) touches over ``--batch-opportunities`` (1,000) distinct opportunities
  each, against the per-touch rate. The target: a batch records at least 1,000 touches/s on one
  connection;
- the peak RSS and the load average while timing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import _database  # bench/ is on sys.path when a script runs

# The sweep's clock at the end of the setup. Fixed, so that runs are comparable; nothing here
# reads the wall clock.
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)

TARGET_BATCH_PER_S = 1000.0  # touches/s of batch ingestion on one connection, at least

SOURCE = "bench"

# The earlier touches of an opportunity with k of them are the first k of these: channel,
# direction, outcome, and when after arrival (hours, from and to). Capped at T0 - 1 minute.
SEEDED_TOUCHES = [
    ("email", "inbound", "received", 0.0, 0.2),
    ("phone", "outbound", "no_answer", 1.0, 5.0),
    ("email", "outbound", "sent", 6.0, 30.0),
]
# The measured mix: (channel, direction, outcome), weight.
MIX = [
    (("phone", "outbound", "connected"), 30),
    (("phone", "outbound", "no_answer"), 30),
    (("email", "inbound", "received"), 20),
    (("email", "outbound", "sent"), 20),
]
# Where record_touch and record_touches may live: the first module that has the name wins.
INGEST_MODULES = ("followup_visibility.ingest.touches", "followup_visibility.touches")

_T = TypeVar("_T")

LOADS: list[float] = []


def timed(fn: Callable[[], _T], *, measured: bool = True) -> tuple[_T, float]:
    # Other processes on the machine skew every figure: the load is printed with them.
    if measured:
        LOADS.append(os.getloadavg()[0])
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def configure() -> None:
    _database.configure("bench_ingest.py")


def ingest_function(name: str) -> Callable[..., Any] | None:
    """``name`` from the first of ``INGEST_MODULES`` that has it, else None.

    A module that does not exist is skipped; one that exists but fails to import raises.
    """
    for module_name in INGEST_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue
            raise
        found = getattr(module, name, None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


def module(old: str, new: str) -> Any:
    """A package module by its path in the layered package (``new``), else by its path
    before (``old``), so that the baseline can be measured on the earlier code too."""
    try:
        return importlib.import_module(f"followup_visibility.{new}")
    except ModuleNotFoundError:
        return importlib.import_module(f"followup_visibility.{old}")


table = _database.table
run_sql = _database.run_sql


def seed_opportunities(n: int) -> int:
    return _database.seed_opportunities(n, T0)


def seed_touches() -> int:
    """0 to 3 earlier touches per opportunity (a quarter each), classified as record_touch
    would classify them, with external ids so that the idempotency index has its real size."""
    from followup_visibility.models import Touch, TrackedOpportunity

    rules = module("rules", "engine.touch_rules")
    TouchDraft, classify = rules.TouchDraft, rules.classify

    patterns = []
    for number, (channel, direction, outcome, start_h, end_h) in enumerate(SEEDED_TOUCHES, 1):
        verdict = classify(TouchDraft(channel, direction, outcome, "crm-sync"))
        patterns.append(
            (
                number,
                channel,
                direction,
                outcome,
                start_h,
                end_h,
                verdict.meaningful,
                verdict.reason,
            )
        )
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(patterns))
    return run_sql(
        f"""
        INSERT INTO {table(Touch)} (
            opportunity_id, channel, direction, outcome, occurred_at, recorded_at, logging_lag,
            source, external_id, contact, summary, metadata, is_meaningful, meaningful_reason,
            created_at
        )
        SELECT o.id, p.channel, p.direction, p.outcome, t.at, t.at + interval '2 minutes',
               interval '2 minutes', 'crm-sync', 'seed-' || o.id || '-' || p.number, '', '',
               '{{}}'::jsonb, p.meaningful, p.reason, t.at + interval '2 minutes'
        FROM {table(TrackedOpportunity)} o
        -- "+ o.id * 0": correlated, so drawn for each opportunity rather than once
        CROSS JOIN LATERAL (SELECT floor(random() * 4)::int + o.id * 0 AS count) c
        JOIN (VALUES {values}) p (number, channel, direction, outcome, start_h, end_h,
                                  meaningful, reason)
          ON p.number <= c.count
        CROSS JOIN LATERAL (
            SELECT LEAST(
                o.arrived_at + (p.start_h + random() * (p.end_h - p.start_h)) * interval '1 hour',
                %s - interval '1 minute'
            ) AS at
        ) t
        """,
        [v for pattern in patterns for v in pattern] + [T0],
    )


def set_timelines() -> int:
    """The derived timeline fields, folded by ``timeline.fold`` from the seeded touches."""
    from django.db import connection

    from followup_visibility.models import Touch, TrackedOpportunity

    timeline = module("timeline", "engine.timeline")

    by_opportunity: dict[int, list[dict[str, Any]]] = defaultdict(list)
    columns = ["id", "channel", "direction", "outcome", "occurred_at", "is_meaningful"]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT opportunity_id, {', '.join(columns)}, meaningful_reason FROM {table(Touch)}"
        )
        for opportunity_id, *row in cursor.fetchall():
            by_opportunity[opportunity_id].append(
                dict(zip([*columns, "meaningful_reason"], row, strict=True))
            )
    fields = timeline.STATE_FIELDS
    arrays: dict[str, list[Any]] = {name: [] for name in ["id", *fields]}
    for opportunity_id, touches in by_opportunity.items():
        state = timeline.fold(touches)
        arrays["id"].append(opportunity_id)
        for name in fields:
            arrays[name].append(getattr(state, name))
    # The fields are named after their columns (``*_id``: the touch keys).
    casts = {
        name: "bigint[]" if name == "id" or name.endswith("_id") else "timestamptz[]"
        for name in ["id", *fields]
    }
    assignments = ", ".join(f"{name} = v.{name}" for name in fields)
    unnest = ", ".join(f"%({name})s::{casts[name]}" for name in ["id", *fields])
    return run_sql(
        f"""
        UPDATE {table(TrackedOpportunity)} o SET {assignments}
        FROM unnest({unnest}) AS v ({", ".join(["id", *fields])})
        WHERE o.id = v.id
        """,
        arrays,
    )


def seed(n: int) -> dict[str, Any]:
    """The whole setup, each step timed; returns counts and seconds."""
    from followup_visibility.models import TrackedOpportunity

    recompute = module("recompute", "config.recompute")
    sweep = module("sweep", "alerting.sweep")

    def step(fn: Callable[[], _T]) -> tuple[_T, float]:
        return timed(fn, measured=False)

    report: dict[str, Any] = {}
    report["opportunities"], report["opportunities_s"] = step(lambda: seed_opportunities(n))
    report["touches"], report["touches_s"] = step(seed_touches)
    report["timelines"], report["timelines_s"] = step(set_timelines)
    run_sql("ANALYZE")  # the recompute reads what was just inserted
    result, report["deadlines_s"] = step(
        lambda: recompute.recompute_all(recompute.Scope(reason="bench seed"), T0)
    )
    report["deadlines"] = result.totals.written
    run, report["sweep_s"] = step(lambda: sweep.sweep(T0))
    report["alerts"] = run.raised
    _, report["vacuum_s"] = step(lambda: (run_sql("VACUUM ANALYZE"), run_sql("CHECKPOINT")))
    # The seed must be what record_touch would have left: timelines refresh to themselves.
    sample = list(TrackedOpportunity.objects.order_by("?")[:50])
    try:
        refresh = importlib.import_module("followup_visibility.alerting.refresh")
    except ModuleNotFoundError:
        timeline = module("timeline", "engine.timeline")
        for opportunity in sample:
            changed = timeline.refresh(opportunity)
            assert not changed, f"seeded timeline of {opportunity.pk} differs: {changed}"
    else:
        with _rolled_back():
            check = refresh.Cause("bench seed check", timeline=True)
            folded = refresh.refresh([o.pk for o in sample], now=T0, cause=check).folded
            assert not folded, f"{folded} seeded timelines differ from their fold"
    return report


class _Rollback(Exception):
    pass


class _rolled_back:
    """Run a block in a transaction that is rolled back (a check that must write nothing)."""

    def __enter__(self) -> None:
        from django.db import transaction

        self._atomic = transaction.atomic()
        self._atomic.__enter__()

    def __exit__(self, *exc: Any) -> bool:
        from django.db import transaction

        transaction.set_rollback(True)
        self._atomic.__exit__(*exc)
        return False


@dataclass(frozen=True)
class TouchSpec:
    opportunity_id: int
    channel: str
    direction: str
    outcome: str
    occurred_at: datetime
    now: datetime
    external_id: str

    def kwargs(self, opportunity: Any) -> dict[str, Any]:
        """record_touch's arguments, as a webhook would pass them."""
        return {
            "target": opportunity,
            "channel": self.channel,
            "direction": self.direction,
            "outcome": self.outcome,
            "occurred_at": self.occurred_at,
            "now": self.now,
            "source": SOURCE,
            "external_id": self.external_id,
        }


class Clock:
    """The bench's ``now``: one second later for every touch, never the wall clock."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def tick(self) -> datetime:
        self.now += SECOND
        return self.now


def make_touches(
    rng: random.Random, opportunity_ids: Sequence[int], count: int, clock: Clock, prefix: str
) -> list[TouchSpec]:
    """``count`` touches of the mix, spread round-robin over the given opportunities; each
    happened up to two minutes before it is recorded."""
    kinds = [kind for kind, _ in MIX]
    weights = [weight for _, weight in MIX]
    specs = []
    for i in range(count):
        now = clock.tick()
        channel, direction, outcome = rng.choices(kinds, weights)[0]
        specs.append(
            TouchSpec(
                opportunity_id=opportunity_ids[i % len(opportunity_ids)],
                channel=channel,
                direction=direction,
                outcome=outcome,
                occurred_at=now - rng.uniform(0, 120) * SECOND,
                now=now,
                external_id=f"{prefix}-{i}",
            )
        )
    return specs


def load_targets(specs: Sequence[TouchSpec]) -> dict[int, Any]:
    """The opportunities the touches go to, read before timing (a webhook has its record)."""
    from followup_visibility.models import TrackedOpportunity

    return TrackedOpportunity.objects.in_bulk({spec.opportunity_id for spec in specs})


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def one_by_one(
    record_touch: Callable[..., Any], specs: Sequence[TouchSpec], *, created: bool
) -> tuple[list[float], float]:
    """Each touch in its own call and transaction (autocommit); latencies and total seconds."""
    from django.db import connection

    assert connection.get_autocommit() and not connection.in_atomic_block
    targets = load_targets(specs)
    latencies = []
    LOADS.append(os.getloadavg()[0])
    start = time.perf_counter()
    for spec in specs:
        t0 = time.perf_counter()
        result = record_touch(**spec.kwargs(targets[spec.opportunity_id]))
        latencies.append(time.perf_counter() - t0)
        assert result.created is created, (spec, result)
    return latencies, time.perf_counter() - start


def count_queries(
    record_touch: Callable[..., Any], specs: Sequence[TouchSpec]
) -> tuple[list[int], dict[tuple[str, str, str], list[int]]]:
    """Queries of each call: all of them, and by kind of touch."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    targets = load_targets(specs)
    counts: list[int] = []
    by_kind: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for spec in specs:
        with CaptureQueriesContext(connection) as captured:
            record_touch(**spec.kwargs(targets[spec.opportunity_id]))
        counts.append(len(captured))
        by_kind[(spec.channel, spec.direction, spec.outcome)].append(len(captured))
    return counts, by_kind


def call_batch(
    record_touches: Callable[..., Any],
    batch: Sequence[TouchSpec],
    targets: dict[int, Any],
    now: datetime,
) -> Any:
    """One batch through ``record_touches``: mappings of ``record_touch``'s keyword arguments
    (``target`` included, ``now`` given once for the batch); every touch must be new."""
    items = []
    for spec in batch:
        item = spec.kwargs(targets[spec.opportunity_id])
        del item["now"]
        items.append(item)
    results = record_touches(items, now=now)
    assert all(result.created for result in results)
    return results


def measure_batches(
    rng: random.Random,
    pool: Sequence[int],
    clock: Clock,
    *,
    batch_size: int,
    batch_opportunities: int,
    batches: int,
    per_touch_rate: float,
) -> float | None:
    """Batch ingestion if this version has ``record_touches``: touches/s, else None."""
    record_touches = ingest_function("record_touches")
    if record_touches is None:
        print("batch ingestion: not available in this version")
        return None
    from django.db import connection

    assert connection.get_autocommit() and not connection.in_atomic_block
    times = []
    for number in range(batches):
        first = (number * batch_opportunities) % max(1, len(pool) - batch_opportunities + 1)
        opportunities = pool[first : first + batch_opportunities]
        batch = make_touches(rng, opportunities, batch_size, clock, f"batch-{number}")
        targets = load_targets(batch)  # untimed, as for the per-touch run
        _, seconds = timed(
            lambda batch=batch, targets=targets: call_batch(
                record_touches, batch, targets, clock.now
            )
        )
        times.append(seconds)
    rate = batch_size * batches / sum(times)
    print(
        f"batch ingestion ({batches} batches of {batch_size:,} touches over "
        f"{batch_opportunities:,} opportunities each): {rate:,.0f} touches/s; per batch median "
        f"{statistics.median(times) * 1000:,.0f} ms, max {max(times) * 1000:,.0f} ms; "
        f"{rate / per_touch_rate:.1f}x the per-touch rate"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--opportunities", type=int, default=100_000, help="open opportunities (100,000)"
    )
    parser.add_argument("--touches", type=int, default=2000, help="timed touches (2,000)")
    parser.add_argument(
        "--query-sample", type=int, default=50, help="touches whose queries are counted (50)"
    )
    parser.add_argument("--repeats", type=int, default=1000, help="repeat deliveries (1,000)")
    parser.add_argument("--batch-size", type=int, default=1000, help="touches per batch (1,000)")
    parser.add_argument(
        "--batch-opportunities",
        type=int,
        default=1000,
        help="distinct opportunities per batch (1,000)",
    )
    parser.add_argument("--batches", type=int, default=10, help="timed batches (10)")
    args = parser.parse_args()
    t_start = time.perf_counter()
    load = os.getloadavg()[0]
    configure()

    from django.db import connection

    import followup_visibility
    from followup_visibility.models import TrackedOpportunity

    record_touch = ingest_function("record_touch")
    if record_touch is None:
        sys.exit(f"record_touch not found in {' or '.join(INGEST_MODULES)}")

    if load > 0.5:
        print(f"warning: load average {load:.2f} at start: the machine was not idle")
    print(
        f"PostgreSQL {connection.pg_version // 10000}.{connection.pg_version % 100}, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"{args.opportunities:,} open opportunities; "
        f"{record_touch.__module__}.record_touch from {followup_visibility.__file__}"
    )
    seeded, seed_s = timed(lambda: seed(args.opportunities))
    print(
        f"setup in {seed_s:.1f} s: {seeded['opportunities']:,} opportunities "
        f"({seeded['opportunities_s']:.1f} s), {seeded['touches']:,} earlier touches "
        f"({seeded['touches_s']:.1f} s), timelines of {seeded['timelines']:,} folded "
        f"({seeded['timelines_s']:.1f} s), {seeded['deadlines']:,} deadlines by recompute_all "
        f"({seeded['deadlines_s']:.1f} s), first sweep raised {seeded['alerts']:,} alerts "
        f"({seeded['sweep_s']:.1f} s), VACUUM ANALYZE and CHECKPOINT ({seeded['vacuum_s']:.1f} s)"
    )

    # The setup's own peak (folding 150,000 touches, the recompute, the sweep) is most of the
    # run's: printed apart, so that what ingestion adds shows.
    setup_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # Distinct opportunities for every measurement, drawn at random, so that no touch finds
    # an opportunity another measurement has just touched.
    rng = random.Random(2026)
    ids = list(TrackedOpportunity.objects.open().values_list("pk", flat=True))
    wanted = args.query_sample + args.touches + args.batches * args.batch_opportunities
    picked = rng.sample(ids, min(wanted, len(ids)))
    del ids
    counted_ids = picked[: args.query_sample]
    timed_ids = picked[args.query_sample : args.query_sample + args.touches] or picked
    batch_pool = picked[args.query_sample + args.touches :] or picked
    clock = Clock(T0 + 5 * 60 * SECOND)

    # Queries first: it also warms the process (imports, caches) before the timed run.
    sample = make_touches(rng, counted_ids, args.query_sample, clock, "counted")
    everything, by_kind = count_queries(record_touch, sample)
    print(
        f"queries per touch ({len(everything)} touches, CaptureQueriesContext): mean "
        f"{statistics.mean(everything):.1f}, min {min(everything)}, max {max(everything)}"
    )
    for (channel, direction, outcome), found in sorted(by_kind.items()):
        print(
            f"    {direction} {channel} {outcome or '-':<10} {len(found):>3} touches: "
            f"mean {statistics.mean(found):.1f}"
        )
    repeat_counts, _ = count_queries(record_touch, sample[:10])  # stored already: repeats

    specs = make_touches(rng, timed_ids, args.touches, clock, "timed")
    latencies, total_s = one_by_one(record_touch, specs, created=True)
    per_touch_rate = len(specs) / total_s
    print(
        f"per touch (record_touch, autocommit, {len(specs):,} touches on "
        f"{len(set(timed_ids)):,} opportunities): {per_touch_rate:,.0f} touches/s "
        f"({total_s:.1f} s); latency p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p95 {percentile(latencies, 0.95) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )

    repeated = specs[: args.repeats]
    repeat_latencies, repeat_s = one_by_one(record_touch, repeated, created=False)
    print(
        f"repeat deliveries (same source and external id, {len(repeated):,}): "
        f"{len(repeated) / repeat_s:,.0f} /s; p50 {percentile(repeat_latencies, 0.5) * 1000:.2f} "
        f"ms; {statistics.mean(repeat_counts):.1f} queries each"
    )

    batch_rate = measure_batches(
        rng,
        batch_pool,
        clock,
        batch_size=args.batch_size,
        batch_opportunities=args.batch_opportunities,
        batches=args.batches,
        per_touch_rate=per_touch_rate,
    )

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"load average (1 min) before the timed steps: {min(LOADS):.2f} to {max(LOADS):.2f}"
        f" (median {statistics.median(LOADS):.2f}; {os.cpu_count()} CPUs); load average now "
        + ", ".join(f"{value:.2f}" for value in os.getloadavg())
    )
    print(
        f"peak RSS {peak_mb:,.0f} MB ({setup_peak_mb:,.0f} MB at the end of the setup); "
        f"total run {time.perf_counter() - t_start:.0f} s"
    )
    target = f"target: batch >= {TARGET_BATCH_PER_S:,.0f} touches/s on one connection"
    if batch_rate is None:
        print(
            f"summary: {target}; batch not available; per touch today {per_touch_rate:,.0f} "
            f"touches/s ({per_touch_rate / TARGET_BATCH_PER_S:.2f}x the target)"
        )
    else:
        verdict = "meets" if batch_rate >= TARGET_BATCH_PER_S else "MISSES"
        print(
            f"summary: {target}; batch {batch_rate:,.0f} touches/s ({verdict}); per touch "
            f"{per_touch_rate:,.0f} touches/s"
        )


if __name__ == "__main__":
    main()
