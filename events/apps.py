from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Events"

    def ready(self) -> None:
        from events import signals  # noqa: F401  (cache invalidation on rule/route edits)
