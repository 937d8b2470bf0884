"""URLs of the rollout app (mounted at the root). The staff panel lives in the admin
(``rollout/admin.py``)."""

from django.urls import path

from rollout import api, views

urlpatterns = [
    path("settings/", views.user_settings, name="rollout-settings"),
    path("api/time", api.server_time, name="rollout-time"),
    path("api/transport", api.transport, name="rollout-transport"),
    path("api/telemetry", api.telemetry, name="rollout-telemetry"),
]
