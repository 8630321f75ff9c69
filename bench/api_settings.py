"""bench/bench_api.py's served process: the example project as production would run it.

DEBUG off (it would keep a log of every query), persistent database connections (a new
PostgreSQL connection per request costs milliseconds), no ingestion throttle (the benchmark
posts far more than the default 600 requests a minute), and no log line per request.
"""

import os

from example_project.settings import *  # noqa: F403
from example_project.settings import DATABASES

DEBUG = False
DATABASES["default"]["CONN_MAX_AGE"] = None
if os.environ.get("BENCH_API_JIT") == "off":
    # bench_api.py --jit off: PostgreSQL's JIT off for the server's sessions, as an operator
    # would set it for the role or the database.
    DATABASES["default"]["OPTIONS"] = {"options": "-c jit=off"}
FOLLOWUP_VISIBILITY_API_INGEST_RATE = None
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    # A 4xx is logged as a warning: the readiness probe's 401s are expected.
    "loggers": {"django.request": {"level": "ERROR"}},
}
