"""The benchmarks' database: Django on PostgreSQL, dropped and created afresh for each run."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_URL = "postgres://postgres@127.0.0.1:5432/followup_bench"


def configure(script: str) -> None:
    """Set Django up on DATABASE_URL, recreate that database and migrate it.

    Refuses SQLite (the figures are for the production database) and any database whose name
    lacks "bench", since it is dropped.
    """
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            f"{script} runs on PostgreSQL only, not SQLite (the figures are for the "
            "production database). Set DATABASE_URL, e.g.\n"
            f"  DATABASE_URL={EXAMPLE_URL} .venv/bin/python bench/{script}"
        )
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "0")  # DEBUG keeps a log of every query

    import django
    from django.conf import settings

    django.setup()
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        sys.exit(f"{script} runs on PostgreSQL only, not {db['ENGINE']}.")
    if "bench" not in db["NAME"]:
        sys.exit(f"refusing to drop database {db['NAME']!r}: its name must contain 'bench'.")

    import psycopg
    from psycopg import sql

    params = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": "postgres"}
    if db["PASSWORD"]:
        params["password"] = db["PASSWORD"]
    with psycopg.connect(**params, autocommit=True) as conn:
        name = sql.Identifier(db["NAME"])
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))

    from django.core.management import call_command

    call_command("migrate", verbosity=0)


#: The teams and reps the seeded opportunities are spread over.
TEAMS = [("new-york", "New York"), ("london", "London"), ("sydney", "Sydney")]
REPS = 40


def table(model: Any) -> str:
    from django.db import connection

    return str(connection.ops.quote_name(model._meta.db_table))


def run_sql(statement: str, params: Any = None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return int(cursor.rowcount)


def seed_opportunities(n: int, t0: datetime) -> int:
    """N open ``crm.Lead`` opportunities in one INSERT, arrived over the six weeks before
    ``t0``, on the default calendar's teams and 40 reps, as assignment would leave them."""
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType

    from followup_visibility.models import Calendar, Team, TrackedOpportunity

    calendar = Calendar.objects.get(is_default=True)
    # bulk_create sends no signal: a new team would otherwise plan a recompute.
    teams = Team.objects.bulk_create(
        Team(key=key, name=name, calendar=calendar) for key, name in TEAMS
    )
    user = get_user_model()
    reps = user.objects.bulk_create(user(username=f"rep{i}", password="!") for i in range(REPS))
    content_type = ContentType.objects.get_by_natural_key("crm", "lead")

    run_sql("SELECT setseed(0.2026)")
    # One opportunity in ten has no owner and one in four no team, as in a real inbox. No
    # segment: there are no segment rules, so assignment leaves segment_source empty too.
    return run_sql(
        f"""
        INSERT INTO {table(TrackedOpportunity)} (
            content_type_id, object_pk, title, stage, status, close_reason, arrived_at,
            team_key, team_id, segment_hints, segment_code, segment_source, owner_id,
            owner_confirmed_at, next_action_note, snapshot_digest, stalled_reason, tenant,
            arrival_channel, created_at, updated_at
        )
        SELECT %(ct)s, g::text, 'Lead ' || g,
               (ARRAY['', 'new', 'qualification', 'proposal', 'negotiation'])[1 + g %% 5],
               'open', '', a.arrived_at,
               COALESCE((%(team_keys)s::text[])[1 + g %% 4], ''), (%(teams)s::bigint[])[1 + g %% 4],
               '{{}}'::jsonb, '', '',
               CASE WHEN g %% 10 <> 0 THEN (%(reps)s::int[])[1 + (g * 7) %% %(n_reps)s] END,
               CASE WHEN g %% 10 <> 0 THEN a.arrived_at + interval '1 hour' END,
               '', '', '', '', '', a.arrived_at, a.arrived_at
        FROM generate_series(1, %(n)s) g
        CROSS JOIN LATERAL (
            SELECT %(t0)s - random() * interval '42 days' + g * interval '0' AS arrived_at
        ) a
        """,
        {
            "ct": content_type.pk,
            "team_keys": [key for key, _ in TEAMS],
            "teams": [t.pk for t in teams],
            "reps": [u.pk for u in reps],
            "n_reps": REPS,
            "n": n,
            "t0": t0,
        },
    )
