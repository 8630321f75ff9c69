"""Settings of the Celery worker processes some integration tests start: the test settings,
but not eager (chunks go through the broker), and one opportunity key per sweep chunk."""

from tests.settings import *  # noqa: F403

CELERY_TASK_ALWAYS_EAGER = False
FOLLOWUP_VISIBILITY_SWEEP_CHUNK_SIZE = 1
