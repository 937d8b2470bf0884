"""The settings a running dev stack shares with ``manage.py`` in the same checkout.

Once its parts are up, ``manage.py devstack`` (``make run``) writes what it started itself
(the embedded PostgreSQL's and Redis's URLs, supabase_local's URL and API keys, the path
of the stack's JWT signing key, the web address) to ``.devstack/settings.json``, readable
by its owner only, and removes the file when it stops::

    {"pid": <the launcher's pid>, "settings": {"DATABASE_URL": "...", ...}}

``monitor_project.settings.base`` reads the file only when it is the settings module
itself (the default of ``manage.py``, ``asgi.py`` and ``celery.py``), never under
``production`` or ``test`` settings, and only for a setting that the environment does not
set: exported variables always win. A file whose launcher is gone (killed before it could
clean up) is ignored, so a stopped stack never points ``manage.py`` at dead servers.

This module imports nothing from Django: the settings import it.
"""

import json
import os
from pathlib import Path

FILE_NAME = "settings.json"
# The settings a stack may share; anything else in the file is ignored.
SHARED_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "SUPABASE_URL",
    "SUPABASE_PUBLISHABLE_KEY",
    "SUPABASE_SECRET_KEY",
    "SUPABASE_JWT_SIGNING_KEY",  # the path of .devstack/supabase-signing-key.pem
    "ROLLOUT_PROBER_BASE_URL",
)


class DevstackSettingsError(Exception):
    """The settings file exists but cannot be read as one."""


def devstack_settings_path(directory: Path) -> Path:
    return Path(directory) / FILE_NAME


def devstack_settings_write(*, directory: Path, values: dict[str, str], pid: int) -> Path:
    """Write the shared settings atomically (a reader never sees half a file), mode 0600."""
    unknown = sorted(set(values) - set(SHARED_SETTINGS))
    if unknown:
        raise ValueError(f"not a shared dev stack setting: {', '.join(unknown)}")
    path = devstack_settings_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{FILE_NAME}.{pid}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump({"pid": pid, "settings": values}, file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(partial, path)
    return path


def devstack_settings_read(directory: Path) -> dict[str, str]:
    """The settings of the stack running in this checkout; ``{}`` when none runs."""
    path = devstack_settings_path(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        document = json.loads(text)
        pid = document["pid"]
        values = document["settings"]
        if not isinstance(pid, int) or not isinstance(values, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise DevstackSettingsError(
            f"{path} is not a dev stack settings file; delete it (make run writes it again)"
        ) from None
    if not process_alive(pid):
        return {}
    return {
        name: value
        for name, value in values.items()
        if name in SHARED_SETTINGS and isinstance(value, str)
    }


def devstack_settings_owner(directory: Path) -> int | None:
    """The pid of the live launcher that wrote the file, or None."""
    try:
        document = json.loads(devstack_settings_path(directory).read_text(encoding="utf-8"))
        pid = document["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) and process_alive(pid) else None


def devstack_settings_remove(*, directory: Path, pid: int) -> None:
    """Remove the file if this launcher wrote it (a newer stack's file stays)."""
    path = devstack_settings_path(directory)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(document, dict) and document.get("pid") == pid:
        path.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True
