from django.urls import path

from events import api, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("api/events", api.events_collection, name="events-api"),
    path("metrics", api.metrics, name="metrics"),
    path("api/realtime-token", api.realtime_token, name="realtime-token"),
]
