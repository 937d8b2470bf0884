"""Start-up checks of the Supabase settings, with messages that say what to set.

Two complete configurations are accepted: the keys of a project created today
(``SUPABASE_PUBLISHABLE_KEY``, ``SUPABASE_SECRET_KEY``, ``SUPABASE_JWT_SIGNING_KEY``,
optionally ``SUPABASE_JWT_SIGNING_KEY_ID``) and, until Supabase retires them at the end
of 2026, the legacy ones (``SUPABASE_ANON_KEY``, ``SUPABASE_SERVICE_ROLE_KEY``,
``SUPABASE_JWT_SECRET``) with a warning. Anything in between is an error, since Monitor
would then hold one key of each system and not say which it used.

| id | what |
|---|---|
| events.W001 | Supabase not configured at all |
| events.W002 | the legacy keys are in use (deprecated at the end of 2026) |
| events.E001 | a setting the configuration needs is missing |
| events.E002 | ``SUPABASE_URL`` is not an http(s) URL |
| events.E003 | new and legacy key settings set together |
| events.E004 | a key of the wrong kind for its setting (e.g. a secret key where browsers get it) |
| events.E005 | the signing key cannot sign user tokens (not a private EC P-256 / RSA ≥ 2048 key) |
| events.E006 | ``SUPABASE_PLAN`` or ``SUPABASE_MESSAGES_BUDGET_PERCENT`` cannot be read |
| events.W003 | a real project (non-loopback ``SUPABASE_URL``) with no ``SUPABASE_PLAN`` |

No message carries a key's value.
"""

import jwt
from django.conf import settings
from django.core.checks import Error, Warning, register

from events.supabase_client import LEGACY_KEY_SETTINGS, NEW_KEY_SETTINGS
from events.supabase_keys import SigningKeyError, signing_key_load

PUBLISHABLE_PREFIX = "sb_publishable_"
SECRET_PREFIX = "sb_secret_"
NEW_SET_HINT = (
    "Set SUPABASE_URL, SUPABASE_PUBLISHABLE_KEY, SUPABASE_SECRET_KEY and "
    "SUPABASE_JWT_SIGNING_KEY (a private key imported into the project's JWT signing keys; "
    "see docs/supabase.md)."
)


def _value(name: str) -> str:
    return (getattr(settings, name, "") or "").strip()


def _missing(names: tuple[str, ...], *, because: str, hint: str) -> list[Error]:
    return [
        Error(f"{name} is not set but {because} is", hint=hint, id="events.E001")
        for name in names
        if not _value(name)
    ]


def _legacy_jwt_role(value: str) -> str | None:
    """The ``role`` claim of a legacy JWT key, read without verifying (None if not a JWT)."""
    try:
        claims = jwt.decode(value, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    role = claims.get("role")
    return role if isinstance(role, str) else None


def _wrong_kinds() -> list[Error]:
    problems = []
    for name in ("SUPABASE_PUBLISHABLE_KEY", "SUPABASE_ANON_KEY"):
        value = _value(name)
        if value.startswith(SECRET_PREFIX) or (
            name == "SUPABASE_ANON_KEY" and _legacy_jwt_role(value) == "service_role"
        ):
            problems.append(
                Error(
                    f"{name} holds a secret (service_role) key, and every dashboard page "
                    "would hand it to browsers",
                    hint=f"Put the project's publishable key (sb_publishable_…) in {name}, "
                    "and rotate the secret key that was set there.",
                    id="events.E004",
                )
            )
    publishable = _value("SUPABASE_PUBLISHABLE_KEY")
    if publishable and not publishable.startswith((PUBLISHABLE_PREFIX, SECRET_PREFIX)):
        problems.append(
            Error(
                "SUPABASE_PUBLISHABLE_KEY is not a publishable key (sb_publishable_…)",
                hint="Copy it from the dashboard: Project Settings → API Keys → Publishable key.",
                id="events.E004",
            )
        )
    secret = _value("SUPABASE_SECRET_KEY")
    if secret and not secret.startswith(SECRET_PREFIX):
        problems.append(
            Error(
                "SUPABASE_SECRET_KEY is not a secret key (sb_secret_…)",
                hint="Copy it from the dashboard: Project Settings → API Keys → Secret keys.",
                id="events.E004",
            )
        )
    return problems


def _signing_key_problems() -> list[Error]:
    value = _value("SUPABASE_JWT_SIGNING_KEY")
    if not value:
        return []
    try:
        signing_key_load(value, kid=_value("SUPABASE_JWT_SIGNING_KEY_ID"))
    except SigningKeyError as error:
        return [
            Error(
                str(error),
                hint="Generate one with `openssl ecparam -name prime256v1 -genkey -noout | "
                "openssl pkcs8 -topk8 -nocrypt` and import it into the project's JWT "
                "signing keys (docs/supabase.md).",
                id="events.E005",
            )
        ]
    return []


@register()
def supabase_settings_check(app_configs, **kwargs):
    url = _value("SUPABASE_URL")
    new = [name for name in NEW_KEY_SETTINGS if _value(name)]
    legacy = [name for name in LEGACY_KEY_SETTINGS if _value(name)]
    if not url and not new and not legacy:
        return [
            Warning(
                "Supabase is not configured: events are stored and sent on the legacy path, "
                "and their Supabase deliveries wait as pending.",
                hint="Set SUPABASE_URL, SUPABASE_PUBLISHABLE_KEY, SUPABASE_SECRET_KEY and "
                "SUPABASE_JWT_SIGNING_KEY (docs/supabase.md; while make run runs, manage.py "
                "in its checkout gets supabase_local's).",
                id="events.W001",
            )
        ]
    problems = _missing(
        ("SUPABASE_URL",), because=", ".join(new + legacy), hint="The project's API URL."
    )
    if url and not url.startswith(("http://", "https://")):
        problems.append(Error("SUPABASE_URL must start with http:// or https://", id="events.E002"))
    problems += _wrong_kinds()
    if new or not legacy:
        problems += _missing(
            ("SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY", "SUPABASE_JWT_SIGNING_KEY"),
            because=", ".join(new) or "SUPABASE_URL",
            hint=NEW_SET_HINT,
        )
        problems += [
            Error(
                f"{name} (a legacy key) is set beside the new keys ({', '.join(new)})",
                hint=f"Unset {name}: with the new keys set, Monitor uses only them.",
                id="events.E003",
            )
            for name in legacy
        ]
        problems += _signing_key_problems()
        return problems
    problems += _missing(
        ("SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_JWT_SECRET"),
        because=", ".join(legacy),
        hint="Set all three legacy settings, or better the new keys: " + NEW_SET_HINT,
    )
    problems.append(
        Warning(
            "Supabase is configured with the legacy JWT keys (SUPABASE_ANON_KEY, "
            "SUPABASE_SERVICE_ROLE_KEY, SUPABASE_JWT_SECRET), which Supabase deprecates at "
            "the end of 2026.",
            hint="Set SUPABASE_PUBLISHABLE_KEY, SUPABASE_SECRET_KEY and "
            "SUPABASE_JWT_SIGNING_KEY (+ SUPABASE_JWT_SIGNING_KEY_ID) instead, then unset "
            "the three legacy settings; docs/supabase.md says how.",
            id="events.W002",
        )
    )
    return problems


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


@register()
def supabase_plan_check(app_configs, **kwargs):
    """The plan's quotas feed the rollout's refusals and the sink's budget: a value that
    cannot be read stops start-up rather than run on a guessed quota."""
    from urllib.parse import urlsplit

    from events.supabase_plan import PlanError, plan_parse

    problems = []
    raw = getattr(settings, "SUPABASE_PLAN", "") or ""
    try:
        plan_parse(raw)
    except PlanError as error:
        problems.append(
            Error(
                f"SUPABASE_PLAN: {error}",
                hint="e.g. SUPABASE_PLAN=pro, or custom:connections=1000,messages=1000,"
                'joins=500,payload_kb=3000 (docs/supabase.md, "The plan").',
                id="events.E006",
            )
        )
    budget = getattr(settings, "SUPABASE_MESSAGES_BUDGET_PERCENT", 80)
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 100:
        problems.append(
            Error(
                f"SUPABASE_MESSAGES_BUDGET_PERCENT must be a number above 0 and at most 100, "
                f"not {budget!r}",
                id="events.E006",
            )
        )
    url = _value("SUPABASE_URL")
    host = (urlsplit(url).hostname or "") if url else ""
    if url and not raw.strip() and host not in {h.strip("[]") for h in LOOPBACK_HOSTS}:
        problems.append(
            Warning(
                "SUPABASE_PLAN is not set: the rollout cannot tell when a stage would exceed "
                "the project's Realtime quotas, and the sink does not coalesce.",
                hint="Set SUPABASE_PLAN to the project's plan (free, pro, pro-no-cap, team or "
                "custom:…); docs/supabase.md.",
                id="events.W003",
            )
        )
    return problems
