"""The REST API under load on PostgreSQL: the register, the alert list and touch ingestion,
served by a real server process (gunicorn) to concurrent HTTP clients.

Run: .venv/bin/python bench/bench_api.py [--opportunities N] [--clients 20] [--duration 30]
        [--jit on|off] [--think S] [--explain] [--only register,alerts,touches] [--rebuild]
        [--setup-only]

Prerequisite: gunicorn in the venv (``.venv/bin/pip install gunicorn``; it is not a dependency
of the package). Without it the script falls back to Django's threaded ``runserver``.

Databases (DATABASE_URL, default ``postgres://postgres@127.0.0.1:5432/followup_bench_api``; the
name must contain "bench", and SQLite is refused):

- ``<name>_seed_<N>`` is built once and kept between runs (building 1M opportunities takes
  several minutes): migrated, then seeded set-based with raw SQL: N open tracked opportunities of
  ``crm.Lead`` (bench/_database.py: arrivals over six weeks, 40 reps, three teams and a quarter
  without one), three segments of different intent and a value on 70% of them, 0 to 3 earlier
  touches each with the timelines folded from them (bench/bench_ingest.py's loaders), every
  deadline computed by ``recompute_all``, then N/5 **open** alerts (200,000 at 1M) on due
  deadlines picked at random and 4N/5 resolved ones, as a register some weeks old holds; a
  manager per team (reps are members), an operations user who sees everything, and a DRF token
  for each. ``--rebuild`` builds it again.
- ``<name>`` is dropped and cloned from it (``CREATE DATABASE ... TEMPLATE``) at each run, so that
  every run starts from the same data whatever the last one's ingestion wrote.

Then a server process is started on 127.0.0.1 (gunicorn, gthread workers, settings
bench/api_settings.py: DEBUG off, persistent connections, the ingestion throttle off with
``FOLLOWUP_VISIBILITY_API_INGEST_RATE = None``; ``--jit off`` turns PostgreSQL's JIT off for its
sessions) and measured:

- ``GET register/?team=<id>&page_size=50`` (the first page of a team's register), by team
  managers and by the operations user, half each, every client its own team: one client alone
  for ``--single`` requests (the unloaded latency), then ``--clients`` (20) threads with
  persistent connections for ``--duration`` seconds after a warm-up; p50/p95/p99, requests/s and
  the error count (a status other than 200, or a failed connection). Target: p95 <= 100 ms.
  ``--think S`` adds a run where each client waits S seconds between an answer and its next
  request;
- ``GET alerts/`` the same way, once the endpoint is routed (target: p95 <= 100 ms);
- ``POST touches/``: ``--ingest-clients`` (4) clients posting ``--batches`` batches of
  ``--batch-size`` (500) touches, each touch a distinct external id on a distinct opportunity
  with its owner as the actor, as an integration account that sees everything (made in the
  run database); touches/s = touches stored (counted in the database afterwards) / wall time.
  Target: >= 1,000.

The server, PostgreSQL and the clients share the machine's cores: the CPU each used during a
measurement is printed with it. ``--explain`` prints EXPLAIN (ANALYZE, BUFFERS) of the SQL
statements of one register and one alert-list request by an operations user and by a manager
(captured in process, not over HTTP). Figures and findings: docs/performance.md, "API".
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import _database  # bench/ is on sys.path when a script runs

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/followup_bench_api"

#: Bump when the seed changes: a kept seed database of another version is built again.
SEED_VERSION = 2

TARGET_P95_MS = 100.0
TARGET_TOUCHES_PER_S = 1000.0

REGISTER = "/api/followup/register/"
ALERTS = "/api/followup/alerts/"
TOUCHES = "/api/followup/touches/"

#: Segments given to the seeded opportunities: code, name, intent weight, one in ``every``.
SEGMENTS = [
    ("pricing", "Pricing request", "2.00", 5),
    ("demo", "Demo request", "1.50", 3),
    ("brochure", "Brochure download", "0.50", 2),
]

_T = TypeVar("_T")


# Databases ------------------------------------------------------------------------------------


def admin_connection() -> Any:
    """An autocommit connection to the ``postgres`` database, to create and drop databases."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    params = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": "postgres"}
    if db["PASSWORD"]:
        params["password"] = db["PASSWORD"]
    return psycopg.connect(**params, autocommit=True)


def use_database(name: str) -> None:
    """Point Django's default connection at database ``name`` (closing the current one)."""
    from django.db import connections

    connections.close_all()
    connections["default"].settings_dict["NAME"] = name


def configure(url: str) -> str:
    """Set Django up on ``url`` (PostgreSQL, a name with "bench"); return the database name."""
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "bench_api.py runs on PostgreSQL only, not SQLite (the figures are for the "
            f"production database). Set DATABASE_URL, e.g. {DEFAULT_URL}"
        )
    os.environ["DATABASE_URL"] = url
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "0")  # DEBUG keeps a log of every query

    import django
    from django.conf import settings

    django.setup()
    name = str(settings.DATABASES["default"]["NAME"])
    if "bench" not in name:
        sys.exit(f"refusing to drop database {name!r}: its name must contain 'bench'.")
    return name


def seed_info(seed_db: str) -> dict[str, Any] | None:
    """The kept seed database's description, or None when it is missing or unfinished."""
    with admin_connection() as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [seed_db]).fetchone():
            return None
    use_database(seed_db)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('bench_api_seed')")
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute("SELECT info FROM bench_api_seed")
        row = cursor.fetchone()
    return None if row is None else dict(json.loads(row[0]) if isinstance(row[0], str) else row[0])


def recreate(name: str, template: str | None = None) -> None:
    from psycopg import sql

    use_database("postgres")
    from django.db import connections

    connections.close_all()
    with admin_connection() as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        else:
            # FILE_COPY copies the files (a checkpoint, then cp): much faster than WAL_LOG
            # for gigabytes, and the clone keeps the statistics and the visibility map.
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    ident, sql.Identifier(template)
                )
            )


# The data set ---------------------------------------------------------------------------------


table = _database.table
run_sql = _database.run_sql


def timed(fn: Callable[[], _T]) -> tuple[_T, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def set_arrival_channels() -> int:
    """The arrival channel as a refresh would derive it: the channel of the earliest customer
    (inbound) touch; the seeded inbound touch is an email at arrival."""
    from followup_visibility.models import Touch, TrackedOpportunity

    return run_sql(
        f"""
        UPDATE {table(TrackedOpportunity)} o SET arrival_channel = first.channel
        FROM (
            SELECT DISTINCT ON (opportunity_id) opportunity_id, channel
            FROM {table(Touch)} WHERE direction = 'inbound'
            ORDER BY opportunity_id, occurred_at
        ) first
        WHERE o.id = first.opportunity_id
        """
    )


def seed_segments_and_values() -> int:
    """Three segments of different intent and a value on 70% of the opportunities, so that
    the ranking has intent and value to weigh (the shared loader sets neither)."""
    from followup_visibility.models import Segment, TrackedOpportunity

    # bulk_create sends no signal: a new segment would otherwise plan a reassignment.
    segments = Segment.objects.bulk_create(
        Segment(code=code, name=name, intent_weight=weight) for code, name, weight, _ in SEGMENTS
    )
    cases = " ".join(
        f"WHEN id %% {every} = 0 THEN {segment.pk}"
        for segment, (*_, every) in zip(segments, SEGMENTS, strict=True)
    )
    return run_sql(
        f"""
        UPDATE {table(TrackedOpportunity)}
        SET segment_id = CASE {cases} END,
            segment_source = CASE WHEN id %% 2 = 0 OR id %% 3 = 0 OR id %% 5 = 0
                                  THEN 'manual' ELSE '' END,
            value = CASE WHEN id %% 10 < 7 THEN round((random() * 50000)::numeric, 2) END
        """,
        [],
    )


def seed_alerts(t0: datetime, open_count: int, resolved_count: int) -> tuple[int, int]:
    """``open_count`` open alerts and ``resolved_count`` resolved ones on due deadlines picked
    at random, as the sweep would have raised them (one per deadline: distinct episodes)."""
    from followup_visibility.models import Alert, Deadline

    statement = f"""
        INSERT INTO {table(Alert)} (
            opportunity_id, signal, episode_at, due_at, clock_start, sla, raised_at, status,
            dismissed_reason, resolution, resolution_note, snooze_condition, snooze_reason,
            snooze_stage, escalation_level, escalation_planned, resolved_at
        )
        SELECT opportunity_id, signal, event_at, due_at, clock_start, sla,
               LEAST(due_at + interval '1 minute', %(t0)s),
               %(status)s, '', %(resolution)s, '', '', '', '', 0, false,
               CASE WHEN %(status)s = 'resolved'
                    THEN LEAST(due_at + interval '3 hours', %(t0)s) END
        FROM (
            SELECT d.*, row_number() OVER (ORDER BY md5(d.id::text)) AS rank
            FROM {table(Deadline)} d
            WHERE d.due_at <= %(t0)s
        ) picked
        WHERE rank > %(first)s AND rank <= %(last)s
    """
    opened = run_sql(
        statement, {"t0": t0, "status": "open", "resolution": "", "first": 0, "last": open_count}
    )
    resolved = run_sql(
        statement,
        {
            "t0": t0,
            "status": "resolved",
            "resolution": "auto",
            "first": open_count,
            "last": open_count + resolved_count,
        },
    )
    return opened, resolved


def seed_users() -> None:
    """A manager per team (the reps are members, a third each), an operations user who sees
    everything, and a DRF token for each of them and for every rep."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    from followup_visibility.models import Team

    user = get_user_model()
    teams = list(Team.objects.order_by("pk"))
    managers = user.objects.bulk_create(
        user(username=f"manager-{team.key}", password="!") for team in teams
    )
    for team, manager in zip(teams, managers, strict=True):
        # update(), not save(): a saved team plans a reassignment of every open opportunity.
        Team.objects.filter(pk=team.pk).update(manager=manager)
    members = Team.members.through
    reps = list(user.objects.filter(username__startswith="rep").order_by("pk"))
    members.objects.bulk_create(
        members(team_id=teams[i % len(teams)].pk, user_id=rep.pk) for i, rep in enumerate(reps)
    )
    ops = user.objects.create(username="ops", password="!")
    ops.user_permissions.add(
        Permission.objects.get(
            content_type__app_label="followup_visibility", codename="view_all_opportunities"
        )
    )
    for person in [*managers, ops, *reps]:
        Token.objects.create(user=person)


def build_seed(seed_db: str, n: int) -> dict[str, Any]:
    """Create, migrate and seed the kept database; returns its description."""
    import bench_ingest
    from django.core.management import call_command
    from django.db import connection

    from followup_visibility.config import recompute
    from followup_visibility.models import TrackedOpportunity

    print(f"building the seed database {seed_db} ({n:,} opportunities); kept for later runs")
    recreate(seed_db)
    use_database(seed_db)
    call_command("migrate", verbosity=0)
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # bench_ingest's loaders cap the earlier touches at its module clock: this seed's.
    bench_ingest.T0 = t0
    steps: list[tuple[str, float]] = []

    def step(name: str, fn: Callable[[], _T]) -> _T:
        result, seconds = timed(fn)
        steps.append((name, seconds))
        print(f"  {name}: {seconds:.1f} s")
        return result

    step("opportunities", lambda: _database.seed_opportunities(n, t0))
    step("segments and values", seed_segments_and_values)
    touches = step("earlier touches", bench_ingest.seed_touches)
    step("arrival channels", set_arrival_channels)
    step("timelines folded", bench_ingest.set_timelines)
    # Two updates of every row: compact the table before the rest reads it.
    step("VACUUM FULL ANALYZE", lambda: run_sql(f"VACUUM FULL ANALYZE {table(TrackedOpportunity)}"))
    result = step(
        "deadlines (recompute_all)",
        lambda: recompute.recompute_all(recompute.Scope(reason="bench seed"), t0),
    )
    opened, resolved = step("alerts", lambda: seed_alerts(t0, n // 5, 4 * n // 5))
    step("users and tokens", seed_users)
    # The register's stored ranking, as the periodic rescore writes it (its cost at this size).
    from followup_visibility.alerting import ranking

    stored = step("register rows (ranking.rescore)", lambda: ranking.rescore(datetime.now(UTC)))
    step("VACUUM ANALYZE", lambda: run_sql("VACUUM ANALYZE"))
    info = {
        "version": SEED_VERSION,
        "opportunities": n,
        "t0": t0.isoformat(),
        "touches": touches,
        "deadlines": result.totals.written,
        "open_alerts": opened,
        "resolved_alerts": resolved,
        "register_rows": stored,
        "steps_s": {name: round(seconds, 1) for name, seconds in steps},
        "built_in_s": round(sum(seconds for _, seconds in steps)),
    }
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_api_seed (info jsonb NOT NULL)")
        cursor.execute("INSERT INTO bench_api_seed VALUES (%s::jsonb)", [json.dumps(info)])
    run_sql("CHECKPOINT")
    return info


def prepare(name: str, n: int, rebuild: bool) -> dict[str, Any]:
    """The run database, cloned from the kept seed (built first when missing or stale)."""
    from django.core.management import call_command

    seed_db = f"{name}_seed_{n}"
    info = None if rebuild else seed_info(seed_db)
    if info is None or info.get("version") != SEED_VERSION:
        info = build_seed(seed_db, n)
    else:
        print(f"reusing the seed database {seed_db} (built {info['t0']}; --rebuild to rebuild)")
    _, seconds = timed(lambda: recreate(name, template=seed_db))
    use_database(name)
    call_command("migrate", verbosity=0)  # a migration added since the seed was built
    print(f"run database {name} cloned from it in {seconds:.1f} s")
    from followup_visibility.alerting import ranking
    from followup_visibility.models import Alert

    if ranking.ended(datetime.now(UTC), 1):
        # A seed from before the stored levels: store them, as the first sweep pass would,
        # then let autovacuum's work (the old row versions, the statistics) be done.
        moved, seconds = timed(lambda: ranking.advance(datetime.now(UTC), batches=None))
        print(f"stored the severity levels of {moved:,} active alerts in {seconds:.1f} s")
        run_sql(f"VACUUM ANALYZE {table(Alert)}")
    return info


# The served process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    kind: str

    def pids(self) -> list[int]:
        """The master and its workers (their CPU is the server's)."""
        found = [self.process.pid]
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            found += [int(pid) for pid in children.read_text().split()]
        except OSError:
            pass
        return found

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_server(database: str, args: argparse.Namespace, logdir: Path) -> Server:
    """gunicorn (gthread: keep-alive connections) on a free loopback port, or Django's
    threaded runserver when gunicorn is not installed; returns once it answers."""
    from django.conf import settings

    port = free_port()
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{database}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "api_settings",
        "PYTHONPATH": os.pathsep.join([str(BENCH), str(REPO)]),
        "BENCH_API_JIT": args.jit,
    }
    workers, threads = args.workers, args.threads
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if gunicorn.exists():
        kind = f"gunicorn, {workers} gthread workers x {threads} threads"
        command = [
            str(gunicorn),
            "example_project.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            f"--workers={workers}",
            "--worker-class=gthread",
            f"--threads={threads}",
            "--keep-alive=120",
            "--timeout=120",
            "--log-level=warning",
        ]
    else:
        kind = "Django runserver --noreload (threaded): gunicorn is not installed"
        command = [sys.executable, str(REPO / "manage.py"), "runserver", "--noreload"]
        command.append(f"127.0.0.1:{port}")
    log = logdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, port, log, kind)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited ({process.returncode}):\n{server.tail()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", REGISTER)
            if conn.getresponse().status == 401:
                conn.close()
                return server
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    sys.exit(f"the server did not answer within 120 s:\n{server.tail()}")


# Load -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One kind of request a client sends: who, what, and a label for the figures."""

    label: str
    token: str
    method: str
    path: str
    body: Callable[[int], bytes | None] | None = None  # from the request's number

    def headers(self, body: bytes | None) -> dict[str, str]:
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return headers


@dataclass
class Sample:
    label: str
    seconds: float
    status: int  # 0: the connection failed
    started: float


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    first_bodies: dict[str, bytes] = field(default_factory=dict)


def cpu_ticks(pids: Sequence[int]) -> float:
    """CPU seconds used so far by these processes (user and system)."""
    hertz = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / hertz


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    hertz = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / hertz, sum(values) / hertz


def run_clients(
    server: Server,
    calls: Sequence[Sequence[Call]],
    *,
    duration: float | None = None,
    requests: int | None = None,
    warmup: float = 0.0,
    think: float = 0.0,
) -> Load:
    """One thread per entry of ``calls``, each with its own persistent connection, sending
    its calls in turn until ``duration`` seconds have passed after ``warmup`` (samples of the
    warm-up are dropped), or ``requests`` requests each; ``think`` seconds between a
    client's answer and its next request (0: at once)."""
    load = Load()
    lock = threading.Lock()
    start = threading.Barrier(len(calls) + 1)
    window: dict[str, float] = {}

    def client(mine: Sequence[Call]) -> None:
        conn: http.client.HTTPConnection | None = None
        done = 0
        start.wait()
        while True:
            if requests is not None and done >= requests:
                break
            now = time.perf_counter()
            if duration is not None and now >= window["end"]:
                break
            call = mine[done % len(mine)]
            body = call.body(done) if call.body else None
            status = 0
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                conn.request(call.method, call.path, body=body, headers=call.headers(body))
                response = conn.getresponse()
                payload = response.read()
                status = response.status
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                payload = b""
            seconds = time.perf_counter() - t0
            done += 1
            if think:
                time.sleep(think)
            with lock:
                load.first_bodies.setdefault(call.label, payload)
                if t0 >= window["measure"]:
                    load.samples.append(Sample(call.label, seconds, status, t0))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(mine,), daemon=True) for mine in calls]
    for thread in threads:
        thread.start()
    begin = time.perf_counter()
    window["measure"] = begin + warmup
    window["end"] = window["measure"] + (duration or 0.0)
    start.wait()
    # CPU is counted over the measured window only: wait out the warm-up first.
    time.sleep(max(0.0, window["measure"] - time.perf_counter()))
    pids = server.pids()
    server_cpu, own_cpu, busy = cpu_ticks(pids), time.process_time(), machine_busy()
    measured_from = time.perf_counter()
    for thread in threads:
        thread.join()
    load.wall = time.perf_counter() - measured_from
    busy_after = machine_busy()
    load.cpu = {
        "server": cpu_ticks(pids) - server_cpu,
        "clients": time.process_time() - own_cpu,
        "machine": busy_after[0] - busy[0],
        "capacity": (busy_after[1] - busy[1]),
    }
    return load


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summarise(title: str, load: Load, *, ok: Callable[[int], bool] = lambda s: s == 200) -> float:
    """Print the figures of a load; returns the p95 in milliseconds."""
    samples = load.samples
    if not samples:
        print(f"{title}: no request completed")
        return float("inf")
    ms = [s.seconds * 1000 for s in samples]
    errors = sum(1 for s in samples if not ok(s.status))
    statuses = sorted({s.status for s in samples if not ok(s.status)})
    p95 = percentile(ms, 0.95)
    print(
        f"{title}: {len(samples):,} requests in {load.wall:.1f} s = {len(samples) / load.wall:,.1f}"
        f" req/s; p50 {percentile(ms, 0.5):.1f} ms, p95 {p95:.1f} ms, p99 "
        f"{percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms; errors {errors}"
        + (f" (statuses {statuses})" if errors else "")
    )
    labels = sorted({s.label for s in samples})
    if len(labels) > 1:
        for label in labels:
            mine = [s.seconds * 1000 for s in samples if s.label == label]
            print(
                f"    {label:<28} {len(mine):>6,} requests: p50 {percentile(mine, 0.5):.1f} ms, "
                f"p95 {percentile(mine, 0.95):.1f} ms"
            )
    cpu = load.cpu
    if cpu and load.wall:
        cores = cpu["capacity"] / load.wall
        other = max(0.0, cpu["machine"] - cpu["server"] - cpu["clients"])
        print(
            f"    CPU over the window ({cores:.0f} cores): machine busy "
            f"{cpu['machine'] / load.wall:.2f} cores; server processes "
            f"{cpu['server'] / load.wall:.2f} ({cpu['server'] / len(samples) * 1000:.1f} ms a "
            f"request), clients {cpu['clients'] / load.wall:.2f}, the rest (PostgreSQL, other "
            f"processes) {other / load.wall:.2f}"
        )
    return p95


# Who asks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    label: str
    token: str
    team_id: int
    team_key: str


def identities() -> list[Identity]:
    """Each team's manager and, for each team, the operations user; team order."""
    from rest_framework.authtoken.models import Token

    from followup_visibility.models import Team

    tokens = dict(Token.objects.values_list("user__username", "key"))
    found = []
    for team in Team.objects.order_by("pk"):
        found.append(
            Identity(f"manager {team.key}", tokens[f"manager-{team.key}"], team.pk, team.key)
        )
        found.append(Identity(f"ops, team {team.key}", tokens["ops"], team.pk, team.key))
    return found


def spread(calls: Sequence[Call], clients: int) -> list[list[Call]]:
    """``clients`` lists of one call each, taking the calls in turn."""
    return [[calls[i % len(calls)]] for i in range(clients)]


def register_calls(people: Sequence[Identity], page_size: int) -> list[Call]:
    return [
        Call(p.label, p.token, "GET", f"{REGISTER}?team={p.team_id}&page_size={page_size}")
        for p in people
    ]


def alert_calls(people: Sequence[Identity], page_size: int) -> list[Call]:
    return [
        Call(p.label, p.token, "GET", f"{ALERTS}?team={p.team_id}&page_size={page_size}")
        for p in people
    ]


def routed(path: str) -> bool:
    """Whether this version routes ``path`` (the served process loads the same URLconf)."""
    from django.urls import Resolver404, resolve

    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def check_page(load: Load, expected: int) -> None:
    """Each label's first answer is a page of ``expected`` rows (the data set has them)."""
    for label, body in sorted(load.first_bodies.items()):
        try:
            results = json.loads(body)["results"]
        except (ValueError, KeyError, TypeError):
            print(f"    {label}: the first answer is not a page: {body[:200]!r}")
            continue
        if len(results) != expected:
            print(f"    {label}: the first page has {len(results)} rows, not {expected}")


def measure_reads(
    server: Server,
    title: str,
    calls: list[Call],
    args: argparse.Namespace,
) -> float:
    """One client alone, then ``--clients`` at once; returns the loaded p95 (ms)."""
    # The first requests of a fresh process load code and caches: one round, untimed.
    check_page(run_clients(server, [calls], requests=len(calls)), args.page_size)
    single = run_clients(server, [calls], requests=args.single)
    single_p50 = percentile([s.seconds * 1000 for s in single.samples], 0.5)
    summarise(f"{title}, 1 client", single)
    load = run_clients(
        server, spread(calls, args.clients), duration=args.duration, warmup=args.warmup
    )
    p95 = summarise(f"{title}, {args.clients} clients, back to back", load)
    print(
        f"  p95 {p95:.1f} ms against the target of {TARGET_P95_MS:g} ms: "
        f"{p95 / TARGET_P95_MS:.2f}x ({'meets' if p95 <= TARGET_P95_MS else 'MISSES'}); "
        f"{p95 / single_p50:.1f}x one client's median ({single_p50:.1f} ms)"
    )
    if args.think:
        paced = run_clients(
            server,
            spread(calls, args.clients),
            duration=args.duration,
            warmup=args.warmup,
            think=args.think,
        )
        paced_p95 = summarise(
            f"{title}, {args.clients} clients, {args.think:g} s between answer and request",
            paced,
        )
        print(
            f"  p95 {paced_p95:.1f} ms against the target: {paced_p95 / TARGET_P95_MS:.2f}x "
            f"({'meets' if paced_p95 <= TARGET_P95_MS else 'MISSES'})"
        )
    return p95


# EXPLAIN --------------------------------------------------------------------------------------


def explain(title: str, path: str, token: str, min_ms: float = 1.0) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of each SELECT one in-process request to ``path`` runs
    (plans of those over ``min_ms``; their lines cut at 240 characters)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    client = APIClient()
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path, HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")
    print(f"EXPLAIN ANALYZE, {title} ({path}: {response.status_code}, {len(captured)} queries):")
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            sql = query["sql"]
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
            plan = [row[0] for row in cursor.fetchall()]
            ms = float(plan[-1].rsplit(":", 1)[1].split()[0]) if "Execution" in plan[-1] else 0
            print(f"    -- {ms:.1f} ms: {sql[:160]}{'...' if len(sql) > 160 else ''}")
            if ms >= min_ms:
                print("\n".join(f"      {line[:240]}" for line in plan))


# Ingestion ------------------------------------------------------------------------------------


INGEST_SOURCE = "bench-http"
#: The touches posted, in turn: (channel, direction, outcome), as a telephony and mail
#: integration sends them.
INGEST_MIX = [
    ("phone", "outbound", "connected"),
    ("phone", "outbound", "no_answer"),
    ("email", "inbound", "received"),
    ("email", "outbound", "sent"),
]


def integration_token() -> str:
    """The token of an integration account that sees every opportunity and may add touches
    (made in the run database: the kept seed stays as built)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    account, _ = get_user_model().objects.get_or_create(
        username="telephony", defaults={"password": "!"}
    )
    account.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="followup_visibility",
            codename__in=["view_all_opportunities", "add_touch"],
        )
    )
    return str(Token.objects.get_or_create(user=account)[0].key)


def ingest_bodies(
    opportunities: Sequence[tuple[int, int | None]], batch_size: int, prefix: str
) -> list[bytes]:
    """Batches of new touches, one per opportunity, each with its own external id; the actor
    is the opportunity's owner (the rep who called), as a telephony integration names it."""
    now = datetime.now(UTC)
    bodies = []
    for first in range(0, len(opportunities), batch_size):
        touches = []
        for i, (pk, owner) in enumerate(opportunities[first : first + batch_size], first):
            channel, direction, outcome = INGEST_MIX[i % len(INGEST_MIX)]
            touches.append(
                {
                    "opportunity": pk,
                    "channel": channel,
                    "direction": direction,
                    "outcome": outcome,
                    "occurred_at": (now - timedelta(seconds=60 + i % 600)).isoformat(),
                    "source": INGEST_SOURCE,
                    "external_id": f"{prefix}-{i}",
                    "actor": owner,
                }
            )
        bodies.append(json.dumps({"touches": touches}).encode())
    return bodies


def measure_ingestion(server: Server, args: argparse.Namespace, n: int) -> float:
    """``--batches`` batches of ``--batch-size`` new touches, each on its own opportunity,
    posted by ``--ingest-clients`` clients; touches/s stored over the wall time."""
    import random

    from django.db import connection

    from followup_visibility.models import Touch, TrackedOpportunity

    token = integration_token()
    clients, size = args.ingest_clients, args.batch_size
    per_client = max(1, args.batches // clients)
    warm = 50  # one small batch per client first, untimed: code and caches
    wanted = clients * (per_client * size + warm)
    picked = random.Random(2026).sample(range(1, n + 1), min(wanted, n))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, owner_id FROM {table(TrackedOpportunity)} WHERE id = ANY(%s)", [picked]
        )
        owners = dict(cursor.fetchall())
    targets = [(pk, owners[pk]) for pk in picked]
    connection.close()

    def calls(bodies: list[bytes], label: str) -> list[Call]:
        return [
            Call(label, token, "POST", TOUCHES, body=lambda i, body=body: body) for body in bodies
        ]

    warmups, timed_calls = [], []
    for c in range(clients):
        mine = targets[c * (per_client * size + warm) : (c + 1) * (per_client * size + warm)]
        warmups.append(calls(ingest_bodies(mine[:warm], warm, f"warm-{c}"), "warm-up"))
        timed_calls.append(
            calls(ingest_bodies(mine[warm:], size, f"client-{c}"), f"batches of {size}")
        )
    warmup = run_clients(server, warmups, requests=1)
    bad = [s.status for s in warmup.samples if s.status != 201]
    if bad:
        body = next(iter(warmup.first_bodies.values()), b"")
        sys.exit(f"touch ingestion: the warm-up batches answered {bad}: {body[:500]!r}")
    load = run_clients(server, timed_calls, requests=per_client)
    summarise(
        f"touch ingestion, {clients} clients x {per_client} batches of {size}",
        load,
        ok=lambda status: status == 201,
    )
    stored = Touch.objects.filter(source=INGEST_SOURCE).exclude(external_id__startswith="warm-")
    count = stored.count()
    posted = clients * per_client * size
    wall = max(s.started + s.seconds for s in load.samples) - min(s.started for s in load.samples)
    rate = count / wall
    print(
        f"  {count:,} of {posted:,} touches stored (counted in the database) in {wall:.1f} s: "
        f"{rate:,.0f} touches/s against the target of {TARGET_TOUCHES_PER_S:,.0f}: "
        f"{rate / TARGET_TOUCHES_PER_S:.2f}x "
        f"({'meets' if rate >= TARGET_TOUCHES_PER_S else 'MISSES'})"
    )
    connection.close()
    return rate


# Main -----------------------------------------------------------------------------------------


@contextmanager
def serving(database: str, args: argparse.Namespace) -> Iterator[Server]:
    logdir = Path(tempfile.mkdtemp(prefix="bench_api_"))
    server = start_server(database, args, logdir)
    try:
        yield server
    finally:
        server.stop()
        errors = [
            line for line in server.log.read_text(errors="replace").splitlines() if line.strip()
        ]
        if errors:
            print(f"server log ({len(errors)} lines), last ones:")
            print("\n".join(f"    {line}" for line in errors[-15:]))
        shutil.rmtree(logdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--opportunities", type=int, default=1_000_000, help="open opportunities (1,000,000)"
    )
    parser.add_argument("--rebuild", action="store_true", help="build the seed database again")
    parser.add_argument(
        "--setup-only", action="store_true", help="build or clone the databases, measure nothing"
    )
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (20)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured (30)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up (5)")
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="also measure the clients pausing this many seconds between requests (0: not)",
    )
    parser.add_argument("--single", type=int, default=60, help="requests of one client (60)")
    parser.add_argument("--page-size", type=int, default=50, help="rows a page (50)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (4)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (4)")
    parser.add_argument(
        "--jit",
        choices=["on", "off"],
        default="on",
        help="PostgreSQL's JIT in the server's sessions: as configured (on), or off",
    )
    parser.add_argument("--ingest-clients", type=int, default=4, help="posting clients (4)")
    parser.add_argument("--batch-size", type=int, default=500, help="touches a request (500)")
    parser.add_argument("--batches", type=int, default=40, help="batches posted in all (40)")
    parser.add_argument(
        "--only", default="register,alerts,touches", help="measurements to run (all)"
    )
    parser.add_argument(
        "--explain", action="store_true", help="EXPLAIN ANALYZE one request of each list"
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    wanted = set(args.only.split(","))
    t_start = time.perf_counter()
    load_avg = os.getloadavg()[0]
    name = configure(os.environ.get("DATABASE_URL") or DEFAULT_URL)

    from django.db import connection

    info = prepare(name, args.opportunities, args.rebuild)
    if args.setup_only:
        return
    people = identities()
    if load_avg > 0.5:
        print(f"warning: load average {load_avg:.2f} at start: the machine was not idle")
    print(
        f"PostgreSQL {connection.pg_version // 10000}.{connection.pg_version % 100}, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {info['opportunities']:,} "
        f"opportunities, {info['open_alerts']:,} open alerts, {info['resolved_alerts']:,} "
        f"resolved, {info['touches']:,} touches, {info['deadlines']:,} deadlines "
        f"(seeded at {info['t0']}, now {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
    )
    connection.close()  # the server's connections are the ones that count

    with serving(name, args) as server:
        print(
            f"server: {server.kind} on 127.0.0.1:{server.port}; DEBUG off; PostgreSQL JIT "
            + ("as configured" if args.jit == "on" else "off for its sessions")
        )
        if "register" in wanted:
            measure_reads(
                server, "register, first page by team", register_calls(people, args.page_size), args
            )
        if "alerts" in wanted:
            if routed(ALERTS):
                measure_reads(
                    server, "alerts, first page by team", alert_calls(people, args.page_size), args
                )
            else:
                print(f"alerts: {ALERTS} is not routed in this version, skipped")
        if "touches" in wanted:
            if routed(TOUCHES):
                measure_ingestion(server, args, info["opportunities"])
            else:
                print(f"touches: {TOUCHES} is not routed in this version, skipped")

    if args.explain:
        if args.jit == "off":
            run_sql("SET jit = off")  # as the server's sessions had it
        team = people[1]
        explain(
            f"register as {team.label}",
            f"{REGISTER}?team={team.team_id}&page_size={args.page_size}",
            team.token,
        )
        manager = people[0]
        explain(
            f"register as {manager.label}",
            f"{REGISTER}?team={manager.team_id}&page_size={args.page_size}",
            manager.token,
        )
        if routed(ALERTS):
            for person in (team, manager):
                explain(
                    f"alerts as {person.label}",
                    f"{ALERTS}?team={person.team_id}&page_size={args.page_size}",
                    person.token,
                )
    print(
        f"load average now {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"total run {time.perf_counter() - t_start:.0f} s"
    )


if __name__ == "__main__":
    main()
