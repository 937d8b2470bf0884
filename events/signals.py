"""Forget cached classification rules and routes in this process when staff edit them.

Other processes re-read them after ``EVENTS_RULES_CACHE_SECONDS``.
"""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from events.models import ClassificationRule, Route
from events.selectors import routing_table_forget


@receiver([post_save, post_delete], sender=ClassificationRule)
@receiver([post_save, post_delete], sender=Route)
def _routing_changed(**kwargs) -> None:
    routing_table_forget()
