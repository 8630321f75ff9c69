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
