"""``migrate followup_visibility`` from zero in a host of about 100 models, PostgreSQL and SQLite.

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/followup_bench_migrate \\
        .venv/bin/python bench/bench_migrate.py [--runs N] [--databases postgresql sqlite]

The host (``bench/migrate_settings.py``) is the example project plus ``bench/host_crm``, 100
generated models joined by foreign keys to each other and to the user model, as in a real CRM.
Each measurement runs in its own process against a fresh database: PostgreSQL's is DROPPED AND
RECREATED (its name must contain "bench"), SQLite's is a new temporary file. The process first
migrates every other app (untimed), as a host adding this app has done, then times
``call_command("migrate", "followup_visibility")``, which includes loading the migration graph
and the post-migrate signals (content types, permissions).

Two chains, alternating run by run; the median counts:

- ``replaced``, the baseline: migrations 0001..0017 one by one, as Django runs them when the
  squashed migration is absent (the process hides it from the loader);
- ``squashed``: what Django runs on a fresh database, the squashed migration.

Printed per chain: the median total, how much of it re-rendered model states (Django renders
again every model related to one an operation changes, the host's included), and the median
time of each migration (Django's own ``migrate -v 2`` timings). Then squashed / replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from io import StringIO
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APP = "followup_visibility"
CHAINS = ("replaced", "squashed")
APPLIED = re.compile(r"Applying followup_visibility\.(\w+)\.\.\. OK \(([\d.]+)s\)")


# --- the child: one measurement, in a fresh process ------------------------------------------


def hide_squashed_migration() -> None:
    """Make the loader see the replaced migrations only, as if the squash were not there."""
    from django.db.migrations.loader import MigrationLoader

    load_disk = MigrationLoader.load_disk

    def without_squash(self: MigrationLoader) -> None:
        load_disk(self)
        for key, migration in list(self.disk_migrations.items()):
            if key[0] == APP and migration.replaces:
                del self.disk_migrations[key]

    MigrationLoader.load_disk = without_squash  # type: ignore[method-assign]


def count_rendering(totals: dict[str, float]) -> None:
    """Add the time spent rendering model states to ``totals``: whole projects (the migrate
    command renders the state before any migration) and the models rendered again after
    each operation (how many, too)."""
    from django.db.migrations.state import ProjectState, StateApps

    init = StateApps.__init__

    def timed_init(self: StateApps, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        init(self, *args, **kwargs)
        totals["render_all_s"] += time.perf_counter() - t0

    StateApps.__init__ = timed_init  # type: ignore[method-assign]
    reload = ProjectState._reload

    def timed(self: ProjectState, related_models: set[tuple[str, str]]) -> None:
        t0 = time.perf_counter()
        reload(self, related_models)
        totals["rerender_s"] += time.perf_counter() - t0
        totals["rerendered_models"] += len(related_models)

    ProjectState._reload = timed  # type: ignore[method-assign]


def child(chain: str) -> None:
    sys.path[:0] = [str(REPO), str(BENCH)]
    os.environ["DJANGO_SETTINGS_MODULE"] = "migrate_settings"
    os.environ["DJANGO_DEBUG"] = "0"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db.migrations.loader import MigrationLoader

    if chain == "replaced":
        hide_squashed_migration()
    for label in sorted(MigrationLoader(None).migrated_apps - {APP}):
        call_command("migrate", label, verbosity=0)

    totals = {"render_all_s": 0.0, "rerender_s": 0.0, "rerendered_models": 0}
    count_rendering(totals)
    out = StringIO()
    t0 = time.perf_counter()
    call_command("migrate", APP, verbosity=2, stdout=out)
    total = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "total_s": total,
                **totals,
                "migrations": {name: float(s) for name, s in APPLIED.findall(out.getvalue())},
            }
        )
    )


# --- the parent: fresh databases, one process per measurement --------------------------------


def recreate_postgresql() -> None:
    """Drop and create DATABASE_URL's database (only one named for benches)."""
    sys.path.insert(0, str(REPO))
    import psycopg
    from psycopg import sql

    from example_project.dbconfig import database

    db = database(Path("unused"))
    if "bench" not in db["NAME"]:
        sys.exit(f"refusing to drop database {db['NAME']!r}: its name must contain 'bench'.")
    params = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": "postgres"}
    if db["PASSWORD"]:
        params["password"] = db["PASSWORD"]
    with psycopg.connect(**params, autocommit=True) as conn:
        name = sql.Identifier(db["NAME"])
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def measure(database: str, chain: str, url: str) -> dict[str, Any]:
    """One measurement in a new process, on a database that has nothing yet."""
    env = {**os.environ}
    with tempfile.TemporaryDirectory() as tmp:
        if database == "postgresql":
            recreate_postgresql()
            env["DATABASE_URL"] = url
        else:
            env.pop("DATABASE_URL", None)
            env["FOLLOWUP_DEMO_DB"] = str(Path(tmp) / "migrate.sqlite3")
        done = subprocess.run(
            [sys.executable, __file__, "--child", chain],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode:
        sys.exit(f"{database} {chain} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def report(database: str, results: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\n{database}: migrate {APP} from zero, {len(results[CHAINS[0]])} runs, medians")
    for chain in CHAINS:
        runs = results[chain]
        names = list(dict.fromkeys(name for run in runs for name in run["migrations"]))
        totals = [run["total_s"] for run in runs]
        print(
            f"  {chain}: {len(names)} migration(s), total {statistics.median(totals):.2f} s "
            f"(min {min(totals):.2f}, max {max(totals):.2f});"
            f" whole-project renders {median_of(runs, 'render_all_s'):.2f} s; re-rendering "
            f"{median_of(runs, 'rerender_s'):.2f} s "
            f"({median_of(runs, 'rerendered_models'):,.0f} models rendered again)"
        )
        for name in names:
            per_run = [run["migrations"][name] for run in runs if name in run["migrations"]]
            print(f"    {name:<58} {statistics.median(per_run):6.2f} s")
    replaced = median_of(results["replaced"], "total_s")
    squashed = median_of(results["squashed"], "total_s")
    print(
        f"  squashed / replaced (baseline: 0001..0017 one by one): {squashed / replaced:.2f}x "
        f"({replaced / squashed:.1f}x faster)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measurements per chain and database")
    parser.add_argument(
        "--databases", nargs="+", choices=["postgresql", "sqlite"], default=["postgresql", "sqlite"]
    )
    parser.add_argument("--child", choices=CHAINS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    url = os.environ.get("DATABASE_URL", "")
    if "postgresql" in args.databases and not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "Set DATABASE_URL to a PostgreSQL database to drop and recreate, e.g.\n"
            "  DATABASE_URL=postgres://postgres@127.0.0.1:5432/followup_bench_migrate "
            ".venv/bin/python bench/bench_migrate.py\n(or pass --databases sqlite)"
        )
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)
    for database in args.databases:
        results: dict[str, list[dict[str, Any]]] = {chain: [] for chain in CHAINS}
        for _ in range(args.runs):
            for chain in CHAINS:  # alternating, so that drift hits both alike
                results[chain].append(measure(database, chain, url))
        report(database, results)
    print(f"\nload average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
