"""bench/bench_migrate.py's host: the example project plus a generated app of 100 models."""

from example_project.settings import *  # noqa: F403
from example_project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "host_crm"]
