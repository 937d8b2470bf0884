"""Start-up checks of the Supabase settings, with messages that say what to set."""

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def supabase_settings_check(app_configs, **kwargs):
    url = settings.SUPABASE_URL
    service_key = settings.SUPABASE_SERVICE_ROLE_KEY
    if not url and not service_key:
        return [
            Warning(
                "Supabase is not configured: events are stored and sent on the legacy path, "
                "and their Supabase deliveries wait as pending.",
                hint="Set SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY and "
                "SUPABASE_JWT_SECRET (while make run runs, manage.py in its checkout gets "
                "supabase_local's).",
                id="events.W001",
            )
        ]
    problems = []
    for name in (
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_ANON_KEY",
        "SUPABASE_JWT_SECRET",
    ):
        if not getattr(settings, name):
            problems.append(
                Error(
                    f"{name} is not set but SUPABASE_URL or the service key is",
                    hint="Set all four SUPABASE_* settings together.",
                    id="events.E001",
                )
            )
    if url and not url.startswith(("http://", "https://")):
        problems.append(Error("SUPABASE_URL must start with http:// or https://", id="events.E002"))
    return problems
