"""The user's settings page: which transport their dashboard uses."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from rollout import selectors, services
from rollout.models import TransportChoice


@login_required
def user_settings(request: HttpRequest) -> HttpResponse:
    error = None
    if request.method == "POST":
        choice = request.POST.get("transport", "")
        try:
            services.user_transport_preference_set(user=request.user, choice=choice)
        except services.RolloutError as exc:
            error = str(exc)
        else:
            messages.success(request, "Saved. Your open dashboards follow your choice now.")
            return redirect("rollout-settings")
    return render(
        request,
        "rollout/settings.html",
        {
            "choices": TransportChoice.choices,
            "current": selectors.user_transport_choice(request.user),
            "transport": selectors.user_transport(request.user),
            "state": selectors.rollout_state_get(),
            "error": error,
        },
        status=400 if error else 200,
    )
