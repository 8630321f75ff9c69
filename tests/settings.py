"""Test settings: the example CRM as host; PostgreSQL when DATABASE_URL is set, else SQLite."""

import os

from example_project.dbconfig import database
from example_project.settings import *  # noqa: F403
from example_project.settings import BASE_DIR

DATABASES = {"default": database(BASE_DIR / "test.sqlite3")}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # One test database per run, so that parallel runs on one server do not collide.
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_TASK_ALWAYS_EAGER = True

# A two-company host: a company key on every lead, and a manager filtered by the current
# company (tests/test_tenancy.py). Tracked here so that every pass over all models meets it.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.tenant_host"]  # noqa: F405
FOLLOWUP_VISIBILITY_TRACKED_MODELS = {
    **FOLLOWUP_VISIBILITY_TRACKED_MODELS,  # noqa: F405
    "tenant_host.CompanyLead": "tests.tenant_host.adapters.CompanyLeadAdapter",
}
