"""Settings read from the environment, with development defaults.

Every value that differs between machines comes from one ``environ.Env``. With nothing
configured, the defaults point at the machine's PostgreSQL and Redis on loopback;
``manage.py devstack`` (``make run``) instead starts embedded ones and passes their URLs
to the processes it launches through the same variables. While it runs, ``manage.py`` in
another shell of the same checkout uses that stack too: see ``DEVSTACK`` below.
"""

import os
from pathlib import Path

import environ

from monitor_project.devstack_settings import devstack_settings_read

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

# --- The running dev stack (development only) ---------------------------------------------
# `make run` writes the settings of what it started (database, Redis, supabase_local and its
# keys) to .devstack/settings.json while it runs (monitor_project/devstack_settings.py).
# They stand in for a variable the environment does not set, and only when this module is
# the settings module itself (manage.py's, asgi.py's and celery.py's default):
# production.py and test.py import this module and never read the file.
DEVSTACK_DIR = Path(env.str("DEVSTACK_DIR", default=str(BASE_DIR / ".devstack")))
DEVSTACK = (
    devstack_settings_read(DEVSTACK_DIR)
    if os.environ.get("DJANGO_SETTINGS_MODULE") == __name__
    else {}
)

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str(
    "DJANGO_SECRET_KEY", default="dev-only-insecure-secret-key-change-me-in-production"
)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "waffle",
    "django_celery_beat",
    "monitor_project",
    "events",
    "rollout",
    "reconciliation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "waffle.middleware.WaffleMiddleware",
]

ROOT_URLCONF = "monitor_project.urls"
ASGI_APPLICATION = "monitor_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# PostgreSQL everywhere (no SQLite path), so that one code path is tested.
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL",
        default=DEVSTACK.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/monitor"),
    ),
}
# https://docs.djangoproject.com/en/5.2/ref/databases/#persistent-connections
# Connections are kept between requests: opening one cost ~4 ms of a ~27 ms publish
# (docs/latency.md). Under ASGI that is safe only because HTTP runs on a fixed pool of
# threads (monitor_project/asgi_http.py, HTTP_WORKER_THREADS), not a new thread per
# request; each connection is checked before a request uses it.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=300)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Django's PostgreSQL backend whose health check asks the socket before it asks the server
# (monitor_project/postgresql/base.py): one round trip less per request and per after-work.
DATABASES["default"]["ENGINE"] = "monitor_project.postgresql"
# Worker threads per ASGI process for HTTP requests (each keeps one database connection).
HTTP_WORKER_THREADS = env.int("HTTP_WORKER_THREADS", default=8)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, Celery broker, cache ----------------------------------------
REDIS_URL = env.str("REDIS_URL", default=DEVSTACK.get("REDIS_URL", "redis://127.0.0.1:6379/0"))

# https://channels.readthedocs.io/en/stable/topics/channel_layers.html#redis-pub-sub-channel-layer
# Pub/sub: one Redis message per group send reaches each daphne process once, and the
# process hands it to its own consumers in memory. The list-based layer pushes one copy
# per consumer and pops them one Redis round trip at a time, which at hundreds of
# dashboards per process made that hop the slowest part of the legacy path (docs/latency.md).
# Either layer is at-most-once; consumers refill gaps from the log by seq.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": env.str("CHANNEL_LAYER_PREFIX", default="monitor"),
        },
    },
}

CACHES = {
    "default": {
        # Django's RedisCache, sharing one redis-py client per pool (redis_pool.py).
        "BACKEND": "monitor_project.redis_pool.ProcessRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="monitor"),
        # Connections shared by the per-request cache instances (monitor_project/redis_pool.py).
        "OPTIONS": {"pool_class": "monitor_project.redis_pool.ProcessConnectionPool"},
    },
}

# --- Celery -----------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# --- Supabase ----------------------------------------------------------------------------
# A real project's API URL and keys, or supabase_local's, which `make run` passes in (and
# shares through DEVSTACK). Only events.supabase_client reads them; docs/supabase.md says
# where each comes from. Keys as a project created today has them
# (https://supabase.com/docs/guides/api/api-keys, .../guides/auth/signing-keys):
# - the publishable key (sb_publishable_…) goes to browsers; RLS guards the data;
# - the secret key (sb_secret_…) is the server's own, for writes; it never leaves Django;
# - the JWT signing key signs users' tokens: the PEM text of an EC P-256 (ES256) or RSA
#   (RS256) private key, or the path of a PEM file, imported into the project's JWT
#   signing keys; its kid is SUPABASE_JWT_SIGNING_KEY_ID, by default the key's RFC 7638
#   thumbprint. `\n` in the variable stands for a newline (one-line .env files).
SUPABASE_URL = env.str("SUPABASE_URL", default=DEVSTACK.get("SUPABASE_URL", ""))
SUPABASE_PUBLISHABLE_KEY = env.str(
    "SUPABASE_PUBLISHABLE_KEY", default=DEVSTACK.get("SUPABASE_PUBLISHABLE_KEY", "")
)
SUPABASE_SECRET_KEY = env.str(
    "SUPABASE_SECRET_KEY", default=DEVSTACK.get("SUPABASE_SECRET_KEY", "")
)
SUPABASE_JWT_SIGNING_KEY = env.str(
    "SUPABASE_JWT_SIGNING_KEY",
    default=DEVSTACK.get("SUPABASE_JWT_SIGNING_KEY", ""),
    multiline=True,
)
SUPABASE_JWT_SIGNING_KEY_ID = env.str(
    "SUPABASE_JWT_SIGNING_KEY_ID", default=DEVSTACK.get("SUPABASE_JWT_SIGNING_KEY_ID", "")
)
# The legacy JWT keys, deprecated by Supabase at the end of 2026: still read, each only
# where its new counterpart is unset (system check events.W002 says what to set instead).
SUPABASE_ANON_KEY = env.str("SUPABASE_ANON_KEY", default=DEVSTACK.get("SUPABASE_ANON_KEY", ""))
SUPABASE_SERVICE_ROLE_KEY = env.str(
    "SUPABASE_SERVICE_ROLE_KEY", default=DEVSTACK.get("SUPABASE_SERVICE_ROLE_KEY", "")
)
SUPABASE_JWT_SECRET = env.str(
    "SUPABASE_JWT_SECRET", default=DEVSTACK.get("SUPABASE_JWT_SECRET", "")
)
SUPABASE_TIMEOUT_SECONDS = env.float("SUPABASE_TIMEOUT_SECONDS", default=5.0)
# The Supabase sink: rows per upsert, and how long a scheduled flush waits to gather more
# events (0 = at once; batches still form by themselves while a flush is in flight).
SUPABASE_SINK_BATCH_SIZE = env.int("SUPABASE_SINK_BATCH_SIZE", default=500)
SUPABASE_SINK_LINGER_MS = env.int("SUPABASE_SINK_LINGER_MS", default=0)
# Each publishing process writes its events to Supabase right after they commit
# (events/supabase_writer.py); the Celery flush follows after this many seconds as the
# safety net, and the beat drain after that.
SUPABASE_SINK_IN_PROCESS = env.bool("SUPABASE_SINK_IN_PROCESS", default=True)
# A `manage.py supabase_writer` process writes the events as they commit instead (run it
# with SUPABASE_SINK_IN_PROCESS off): the Celery flush then also waits for the safety net.
SUPABASE_WRITER_PROCESS = env.bool("SUPABASE_WRITER_PROCESS", default=False)
SUPABASE_SINK_SAFETY_NET_SECONDS = env.float("SUPABASE_SINK_SAFETY_NET_SECONDS", default=2.0)
# The circuit breaker guarding Supabase writes (state shared through Redis).
SUPABASE_BREAKER_FAIL_MAX = env.int("SUPABASE_BREAKER_FAIL_MAX", default=3)
SUPABASE_BREAKER_RESET_SECONDS = env.float("SUPABASE_BREAKER_RESET_SECONDS", default=30.0)
SUPABASE_BREAKER_NAMESPACE = env.str("SUPABASE_BREAKER_NAMESPACE", default="monitor-supabase")
# The project's Realtime quotas (events/supabase_plan.py; supabase.com/docs/guides/realtime/
# limits): free, pro, pro-no-cap, team, custom:connections=N,messages=N,joins=N,payload_kb=N,
# or unset / unlimited (the dev stack's supabase_local has no quotas). Stage changes that
# would exceed them are refused unless forced; the sink keeps the messages/s it causes
# under SUPABASE_MESSAGES_BUDGET_PERCENT of the plan's, by coalescing events into windows
# of at most SUPABASE_COALESCE_MAX_WINDOW_MS.
SUPABASE_PLAN = env.str("SUPABASE_PLAN", default="")
SUPABASE_MESSAGES_BUDGET_PERCENT = env.float("SUPABASE_MESSAGES_BUDGET_PERCENT", default=80.0)
SUPABASE_COALESCE_MAX_WINDOW_MS = env.int("SUPABASE_COALESCE_MAX_WINDOW_MS", default=2000)
# Realtime clients of monitor:events that send no telemetry (another service, a load test):
# the projections and the sink's window count them beside the measured open dashboards.
SUPABASE_EXTRA_SUBSCRIBERS = env.int("SUPABASE_EXTRA_SUBSCRIBERS", default=0)
# Bearer token that may read /metrics (staff sessions always may).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Rollout (rollout/conf.py documents each) ----------------------------------------------
ROLLOUT_ALERT_WEBHOOK_URL = env.str("ROLLOUT_ALERT_WEBHOOK_URL", default="")
ROLLOUT_ALERT_WEBHOOK_TIMEOUT_SECONDS = env.float(
    "ROLLOUT_ALERT_WEBHOOK_TIMEOUT_SECONDS", default=5.0
)
ROLLOUT_ALERT_EMAIL = env.bool("ROLLOUT_ALERT_EMAIL", default=True)
ROLLOUT_BASELINE_P95_MS = env.float("ROLLOUT_BASELINE_P95_MS", default=100.0)
ROLLOUT_SAMPLE_RETENTION_HOURS = env.int("ROLLOUT_SAMPLE_RETENTION_HOURS", default=48)
ROLLOUT_TELEMETRY_RATE_PER_MINUTE = env.int("ROLLOUT_TELEMETRY_RATE_PER_MINUTE", default=60)
ROLLOUT_TELEMETRY_MIN_USERS = env.int("ROLLOUT_TELEMETRY_MIN_USERS", default=5)
ROLLOUT_TELEMETRY_USER_MAX_OPERATIONS = env.int("ROLLOUT_TELEMETRY_USER_MAX_OPERATIONS", default=50)
ROLLOUT_TELEMETRY_USER_MAX_LATENCIES = env.int("ROLLOUT_TELEMETRY_USER_MAX_LATENCIES", default=50)
ROLLOUT_PROBER_INTERVAL_SECONDS = env.float("ROLLOUT_PROBER_INTERVAL_SECONDS", default=5.0)
ROLLOUT_PROBER_LOSS_TIMEOUT_SECONDS = env.float("ROLLOUT_PROBER_LOSS_TIMEOUT_SECONDS", default=10.0)
ROLLOUT_PROBER_USERNAME = env.str("ROLLOUT_PROBER_USERNAME", default="monitor-prober")
ROLLOUT_PROBER_BASE_URL = env.str(
    "ROLLOUT_PROBER_BASE_URL",
    default=DEVSTACK.get("ROLLOUT_PROBER_BASE_URL", "http://127.0.0.1:8000"),
)
ROLLOUT_EVALUATION_TIME_LIMIT_SECONDS = env.int("ROLLOUT_EVALUATION_TIME_LIMIT_SECONDS", default=10)

# --- Reconciliation (reconciliation/conf.py documents these and the tuning knobs) ---------
RECONCILIATION_GRACE_SECONDS = env.int("RECONCILIATION_GRACE_SECONDS", default=120)
RECONCILIATION_CONSISTENCY_THRESHOLD = env.float(
    "RECONCILIATION_CONSISTENCY_THRESHOLD", default=0.9999
)
RECONCILIATION_TIME_LIMIT_SECONDS = env.int("RECONCILIATION_TIME_LIMIT_SECONDS", default=600)

# --- Alerts by email ------------------------------------------------------------------------
# DJANGO_ADMINS="Ada <ada@example.com>,Grace <grace@example.com>"; nothing is mailed while
# it is empty. EMAIL_URL configures delivery (https://django-environ.readthedocs.io, "Email
# settings"); the default prints mails to the console.
ADMINS = [
    (address.split("<")[0].strip() or address, address.split("<")[-1].rstrip(">").strip())
    for address in env.list("DJANGO_ADMINS", default=[])
]
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
SERVER_EMAIL = env.str("SERVER_EMAIL", default="monitor@localhost")

# --- Auth, sessions, i18n ------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# --- Sign-in throttling (django-axes) -------------------------------------------------------
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
# LOGIN_FAILURE_LIMIT wrong passwords for one username from one address lock that pair
# (the right password is refused too) for LOGIN_LOCKOUT_MINUTES after the last attempt;
# other users and other addresses are not affected. Both sign-in forms (/accounts/login/,
# /admin/login/) go through authenticate(request=...), which axes watches. Attempts live
# in PostgreSQL (durable across restarts, listed in the admin, cleared by
# `manage.py axes_reset_username`); the answer is monitor_project/lockout.py's 429 page.
INSTALLED_APPS += ["axes"]
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]  # last, as axes requires
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked pair before the password
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=15)
AXES_COOLOFF_TIME = "monitor_project.lockout.cool_off"  # LOGIN_LOCKOUT_MINUTES
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a successful sign-in forgets earlier typos
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = True  # an attempt while locked restarts the wait
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "csrfmiddlewaretoken"]  # masked in logs
AXES_LOCKOUT_CALLABLE = "monitor_project.lockout.lockout_response"
AXES_DISABLE_ACCESS_LOG = True  # no row per successful sign-in (only failures count)
AXES_ENABLE_ADMIN = False  # monitor_project/admin.py lists the attempts alone

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# daphne serves static files through WhiteNoise; in development straight from the finders.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Feature flags (django-waffle) -------------------------------------------------------
WAFFLE_FLAG_MODEL = "rollout.Flag"
WAFFLE_CREATE_MISSING_FLAGS = False

# --- Ingest -------------------------------------------------------------------------------
# A batch holds up to 500 events of up to 64 KiB payload each; bodies past this limit are
# answered 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("INGEST_MAX_BODY_BYTES", default=8 * 1024 * 1024)
EVENTS_MAX_BATCH = 500
# Ingest requests per producer per minute (a batch counts once); over it, 429.
INGEST_RATE_PER_MINUTE = env.int("INGEST_RATE_PER_MINUTE", default=6000)
EVENTS_MAX_PAYLOAD_BYTES = 64 * 1024
EVENTS_BACKFILL_DEFAULT_LIMIT = 200
EVENTS_BACKFILL_MAX_LIMIT = 1000
# Seconds a process keeps classification rules and routes before re-reading them.
EVENTS_RULES_CACHE_SECONDS = env.float("EVENTS_RULES_CACHE_SECONDS", default=5.0)

# Every record reaches the console once, through the root logger. Django's own default
# gives the "django" logger a console handler too (with DEBUG on), which printed each
# request warning twice; here it keeps only the mail to ADMINS for errors. A refused
# request (PermissionDenied) is logged as Django's one-line warning, without a traceback.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
        "permission_denied_plain": {
            "()": "monitor_project.log_filters.PermissionDeniedWithoutTraceback"
        },
    },
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "mail_admins": {
            "level": "ERROR",
            "filters": ["require_debug_false"],
            "class": "django.utils.log.AdminEmailHandler",
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django": {"handlers": ["mail_admins"], "level": "INFO"},
        "django.request": {"filters": ["permission_denied_plain"]},
        # django-axes: failures and lockouts are warnings; its start-up banner and a few
        # lines per successful sign-in are INFO.
        "axes": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
    },
}
