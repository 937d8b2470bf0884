"""URL root."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from monitor_project import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("events.urls")),
    path("", include("rollout.urls")),
    path("", include("reconciliation.urls")),
]

# A refusal answers with the site's 403 page (JSON on the API paths): monitor_project/errors.py.
handler403 = "monitor_project.errors.permission_denied"
