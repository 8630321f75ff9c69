"""Throughput of followup_visibility.engine.business_time (no Django needed).

Run: python bench/bench_business_time.py [--n N]

Calendar: America/New_York, split shifts Mon-Fri 09:00-12:30 + 13:30-18:00, Saturday 10:00-14:00,
US federal holidays 2026-2027 closed, two half days. Starts are random UTC instants over 2026, in
and out of hours. The per-date span cache is warmed by one untimed pass (as in a long-lived
worker); the cold first pass is printed too.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from followup_visibility.engine.business_time import (  # noqa: E402
    BusinessCalendar,
    Window,
    add_business_time,
    business_time_between,
)

TARGET_PER_S = 100_000  # research baseline: +8h deadlines per second

# US federal holidays (observed) 2026-2027, inlined so the script needs nothing beyond stdlib.
HOLIDAYS = frozenset(
    date.fromisoformat(d)
    for d in [
        "2026-01-01", "2026-01-19", "2026-02-16", "2026-05-25", "2026-06-19", "2026-07-03",
        "2026-09-07", "2026-10-12", "2026-11-11", "2026-11-26", "2026-12-25", "2027-01-01",
        "2027-01-18", "2027-02-15", "2027-05-31", "2027-06-18", "2027-07-05", "2027-09-06",
        "2027-10-11", "2027-11-11", "2027-11-25", "2027-12-24", "2027-12-31",
    ]
)  # fmt: skip


def make_calendar() -> BusinessCalendar:
    split = (Window(clock(9), clock(12, 30)), Window(clock(13, 30), clock(18)))
    half_day = (Window(clock(9), clock(13)),)
    return BusinessCalendar(
        tz=ZoneInfo("America/New_York"),
        weekly={**dict.fromkeys(range(5), split), 5: (Window(clock(10), clock(14)),)},
        closed_dates=HOLIDAYS,
        special_days={date(2026, 12, 24): half_day, date(2026, 11, 27): half_day},
    )


def rate(fn: Callable[[datetime], object], starts: list[datetime]) -> float:
    t0 = time.perf_counter()
    for s in starts:
        fn(s)
    return len(starts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="calls per measurement")
    n = parser.parse_args().n
    rng = random.Random(2026)
    year_start = datetime(2026, 1, 1, tzinfo=UTC)
    starts = [year_start + timedelta(seconds=rng.randrange(365 * 86400)) for _ in range(n)]
    ends = [s + timedelta(hours=rng.uniform(0, 72)) for s in starts]
    pairs = dict(zip(starts, ends, strict=True))
    h8, h200 = timedelta(hours=8), timedelta(hours=200)

    cold = rate(lambda s: add_business_time(make_calendar(), s, h8), starts[: n // 100 or 1])
    cal = make_calendar()
    # Warm the per-date cache over every date the timed runs touch.
    rate(lambda s: add_business_time(cal, s, h200), starts)

    results = {
        "add_business_time +8h": rate(lambda s: add_business_time(cal, s, h8), starts),
        "add_business_time +200h": rate(lambda s: add_business_time(cal, s, h200), starts),
        "business_time_between (0-72h)": rate(
            lambda s: business_time_between(cal, s, pairs[s]), starts
        ),
    }
    print(f"python {sys.version.split()[0]}, {n:,} calls per measurement (warm cache)")
    for name, per_s in results.items():
        print(f"  {name:<32} {per_s:>12,.0f} /s")
    print(f"  {'+8h, fresh calendar per call':<32} {cold:>12,.0f} /s  (cold cache, worst case)")
    ratio = results["add_business_time +8h"] / TARGET_PER_S
    print(f"+8h vs target {TARGET_PER_S:,}/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
