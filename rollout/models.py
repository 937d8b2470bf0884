"""Rollout models.

``Flag`` is the project's waffle flag model (``WAFFLE_FLAG_MODEL``). It must exist in the
first migration of this app, because a swappable model cannot be introduced once a
database has been created with waffle's own.
"""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from waffle.models import AbstractUserFlag

from rollout.buckets import in_percentage

SUPABASE_REALTIME_FLAG = "supabase_realtime"


class Flag(AbstractUserFlag):
    """A waffle flag whose percentage decision for a signed-in user is a sticky bucket.

    Anonymous requests keep waffle's cookie-and-random behaviour.
    """

    # Waffle's own field stops at 99.9; the last rollout stage is 100 %.
    percent = models.DecimalField(
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="0.0 to 100.0: the share of signed-in users (by sticky bucket) for whom "
        "this flag is active.",
    )

    class Meta(AbstractUserFlag.Meta):
        swappable = "WAFFLE_FLAG_MODEL"
        verbose_name = "Flag"
        verbose_name_plural = "Flags"

    def is_active_for_user_id(self, user_id: int | str) -> bool:
        """The percentage decision alone, usable without a request (consumers, tasks)."""
        return in_percentage(flag_name=self.name, user_id=user_id, percent=self.percent)

    def _is_active_for_percent(self, request, read_only: bool) -> bool | None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            if self.percent and self.percent > 0:
                return self.is_active_for_user_id(user.pk)
            return None
        return super()._is_active_for_percent(request, read_only)
