"""Admin: the rollout panel (custom views on the admin site), and plain model admins.

The panel's URLs are added to the default admin site's own URLs (so they live under
/admin/, inside the admin's namespace, ahead of its catch-all), without replacing the
site: the project's URL root keeps ``admin.site.urls``.
"""

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import path
from waffle.admin import FlagAdmin as WaffleFlagAdmin

from rollout import panel
from rollout.models import (
    SUPABASE_REALTIME_FLAG,
    Alert,
    AuditEntry,
    Flag,
    ForcedPromotionRequest,
    HealthSample,
    RolloutState,
    StageAnalysis,
    Thresholds,
    TransportPreference,
)

_admin_site_urls = admin.site.get_urls


def _urls_with_panel():
    return [
        path("rollout/panel/", panel.panel_view, name="rollout_panel"),
        path("rollout/panel/health.json", panel.health_json, name="rollout_panel_health"),
        path("rollout/panel/action/", panel.panel_action, name="rollout_panel_action"),
        path("rollout/report/", panel.report_view, name="rollout_report"),
        path(
            "rollout/panel/alerts/<int:alert_id>/acknowledge/",
            panel.alert_acknowledge,
            name="rollout_alert_acknowledge",
        ),
        *_admin_site_urls(),
    ]


admin.site.get_urls = _urls_with_panel


# waffle registers the swappable flag model with its own admin; the rollout flag's percent
# is set by the stage (panel or `manage.py rollout stage`), so it is read-only here.
if admin.site.is_registered(Flag):
    admin.site.unregister(Flag)


@admin.register(Flag)
class FlagAdmin(WaffleFlagAdmin):
    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.name == SUPABASE_REALTIME_FLAG:
            fields += ["name", "percent", "everyone"]
        return fields


class RecordAdmin(admin.ModelAdmin):
    """Rows the system writes (state, audit, evidence): shown here, never added, changed
    or deleted here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RolloutState)
class RolloutStateAdmin(RecordAdmin):
    """Changes to the state go through the panel (confirmation, reason, audit)."""

    def changelist_view(self, request, extra_context=None):
        return redirect("admin:rollout_panel")


@admin.register(Thresholds)
class ThresholdsAdmin(admin.ModelAdmin):
    list_display = [
        "__str__", "error_rate_max", "error_rate_window_seconds", "latency_ratio_max",
        "latency_window_seconds", "consecutive_connect_failures_max", "updated_at",
    ]  # fmt: skip

    def has_add_permission(self, request):
        return not Thresholds.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        from rollout import services

        super().save_model(request, obj, form, change)
        services.audit_record(
            actor=request.user, action="thresholds", from_value="",
            to_value=", ".join(form.changed_data)[:64], reason="edited in the admin",
            figures={name: form.cleaned_data.get(name) for name in form.changed_data},
        )  # fmt: skip


@admin.register(AuditEntry)
class AuditEntryAdmin(RecordAdmin):
    list_display = ["at", "actor_label", "action", "from_value", "to_value", "reason"]
    list_filter = ["action", "actor_label"]
    search_fields = ["reason", "actor_label"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["last_seen", "severity", "kind", "count", "message", "acknowledged_at"]
    list_filter = ["severity", "kind"]
    readonly_fields = [f.name for f in Alert._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(TransportPreference)
class TransportPreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "choice", "updated_at"]
    list_filter = ["choice"]
    readonly_fields = ["user", "choice", "updated_at"]

    def has_add_permission(self, request):
        return False


@admin.register(HealthSample)
class HealthSampleAdmin(admin.ModelAdmin):
    list_display = ["at", "transport", "kind", "value", "weight", "origin", "reporter_id"]
    list_filter = ["transport", "kind", "origin"]
    show_full_result_count = False  # the table is large; counting it is not free

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(StageAnalysis)
class StageAnalysisAdmin(RecordAdmin):
    """Evidence: recorded by the system (beat, stage changes, ``rollout analyse``), never
    edited."""

    list_display = ["recorded_at", "stage", "verdict", "final", "trigger", "window_start",
                    "window_end"]  # fmt: skip
    list_filter = ["verdict", "stage", "final", "trigger"]
    readonly_fields = [f.name for f in StageAnalysis._meta.fields]


@admin.register(ForcedPromotionRequest)
class ForcedPromotionRequestAdmin(RecordAdmin):
    """Decided on the rollout panel (four eyes), read here."""

    list_display = ["requested_at", "from_stage", "to_stage", "requested_by", "status",
                    "decided_by", "decided_at"]  # fmt: skip
    list_filter = ["status"]
    readonly_fields = [f.name for f in ForcedPromotionRequest._meta.fields]
