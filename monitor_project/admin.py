"""Admin pages of the project itself: sign-in lockouts (django-axes).

Only the attempts list is shown (``AXES_ENABLE_ADMIN`` is off, which would also add
axes' access logs, kept off in settings): deleting a row there unlocks that username
from that address, as ``manage.py axes_reset_username`` does (docs/runbook.md).
"""

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin

admin.site.register(AccessAttempt, AccessAttemptAdmin)
