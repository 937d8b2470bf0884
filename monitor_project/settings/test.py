"""Settings for the test suite: the machine's PostgreSQL and Redis on loopback.

Tests use Redis database 1 and their own key prefixes so that a developer's running
stack on database 0 and the tests never read each other's messages.
"""

import os

from monitor_project.settings.base import *  # noqa: F403
from monitor_project.settings.base import CACHES, CHANNEL_LAYERS, DATABASES, env

DEBUG = False
REDIS_URL = env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379/1")
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [REDIS_URL]
# Pub/sub channels ignore the database number: name them after it, so test runs on
# different databases of one Redis never hear each other's group messages.
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"monitor-test-{REDIS_URL.rsplit('/', 1)[-1]}"
CACHES["default"]["LOCATION"] = REDIS_URL
CACHES["default"]["KEY_PREFIX"] = "monitor-test"
CELERY_BROKER_URL = REDIS_URL

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EVENTS_RULES_CACHE_SECONDS = 0.0
SUPABASE_BREAKER_NAMESPACE = "monitor-test-supabase"
SILENCED_SYSTEM_CHECKS = ["events.W001"]  # tests configure Supabase per test

# Every session on the test database says whose it is: a child process started by a test
# gets PGAPPNAME from tests/fixtures/django_processes.py, the test run itself its pid. So a
# session left open at the end can be told apart and named (tests/conftest.py).
DATABASES["default"].setdefault("OPTIONS", {})["application_name"] = (
    os.environ.get("PGAPPNAME") or f"monitor-test-run-{os.getpid()}"
)

# The test process publishes from many tests in turn: a writer thread outliving one test
# would write into the next one's table. The real processes the slow suites start turn
# it on (tests/fixtures/django_processes.py), so the in-process path is tested there.
SUPABASE_SINK_IN_PROCESS = env.bool("SUPABASE_SINK_IN_PROCESS", default=False)
