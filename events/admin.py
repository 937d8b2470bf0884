"""Admin for the event log, producers, classification rules and routes."""

from django.contrib import admin, messages
from django.http import HttpRequest

from events import services
from events.models import (
    BreakerStateChange,
    ClassificationRule,
    Delivery,
    Event,
    Producer,
    Route,
)


@admin.register(Producer)
class ProducerAdmin(admin.ModelAdmin):
    list_display = ["name", "token_prefix", "is_active", "created_at", "last_used_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "token_prefix"]
    readonly_fields = ["token_prefix", "created_at", "last_used_at"]
    actions = ["rotate_tokens"]

    def save_model(self, request: HttpRequest, obj: Producer, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = services.producer_create(name=obj.name)
        obj.pk = issued.producer.pk
        obj.token_prefix = issued.producer.token_prefix
        obj.created_at = issued.producer.created_at
        if not form.cleaned_data.get("is_active", True):
            Producer.objects.filter(pk=obj.pk).update(is_active=False)
        messages.warning(
            request, f"Token for {obj.name} (shown once, store it now): {issued.token}"
        )

    @admin.action(description="Rotate the token of the selected producers")
    def rotate_tokens(self, request: HttpRequest, queryset) -> None:
        for producer in queryset:
            issued = services.producer_token_rotate(producer=producer)
            messages.warning(request, f"New token for {producer.name} (shown once): {issued.token}")


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    readonly_fields = [
        "sink",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "sent_at",
        "write_latency_ms",
    ]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["seq", "event_type", "source", "criticality", "received_at"]
    list_filter = ["criticality"]
    search_fields = ["event_type", "source", "idempotency_key"]
    date_hierarchy = "received_at"
    inlines = [DeliveryInline]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["event_id", "sink", "status", "attempts", "sent_at", "write_latency_ms"]
    list_filter = ["sink", "status"]
    search_fields = ["=event__seq"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ClassificationRule)
class ClassificationRuleAdmin(admin.ModelAdmin):
    list_display = ["match_kind", "value", "criticality", "priority", "is_enabled"]
    list_editable = ["criticality", "priority", "is_enabled"]
    list_filter = ["match_kind", "criticality", "is_enabled"]
    search_fields = ["value"]


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ["criticality", "to_websocket", "to_supabase", "supabase_sample_percent"]
    list_editable = ["to_websocket", "to_supabase", "supabase_sample_percent"]


@admin.register(BreakerStateChange)
class BreakerStateChangeAdmin(admin.ModelAdmin):
    list_display = ["at", "breaker", "old_state", "new_state", "last_error", "process"]
    list_filter = ["new_state"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
