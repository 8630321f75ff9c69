"""The benchmarks' database: Django on PostgreSQL, dropped and created afresh for each run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
