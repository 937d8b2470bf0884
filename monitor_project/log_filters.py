"""Logging filters named in ``LOGGING`` (settings/base.py). Imported while logging is
configured, before the apps are ready: no models here."""

import logging

from django.core.exceptions import PermissionDenied


class PermissionDeniedWithoutTraceback(logging.Filter):
    """Drop the traceback Django attaches to its "Forbidden (Permission denied)" warning
    (``django.request``); the warning itself is kept. Any other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        if exc_info and isinstance(exc_info[1], PermissionDenied):
            record.exc_info = None
            record.exc_text = None
        return True
