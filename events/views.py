"""Dashboard pages."""

import json

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from events import selectors

DASHBOARD_INITIAL_EVENTS = 50


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    events = selectors.events_latest(limit=DASHBOARD_INITIAL_EVENTS)
    latest_seq = events[0].seq if events else selectors.event_latest_seq()
    return render(
        request,
        "events/dashboard.html",
        {
            "events": [
                {**selectors.event_to_wire(event), "payload_json": json.dumps(event.payload)}
                for event in events
            ],
            "latest_seq": latest_seq,
        },
    )
