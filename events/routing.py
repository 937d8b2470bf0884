from django.urls import path

from events.consumers import EventFeedConsumer

websocket_urlpatterns = [path("ws/events/", EventFeedConsumer.as_asgi())]
