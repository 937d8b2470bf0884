"""Admin: runs with their figures and a consistency chart; discrepancies by category;
repair actions behind a confirmation page (the work is done by the repair service); a
"Run now" button that queues a manual run (``reconciliation.run_reconciliation``)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from reconciliation import selectors, services
from reconciliation.conf import reconciliation_setting
from reconciliation.models import ERROR_CATEGORIES, Category, Discrepancy, ReconciliationRun

CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 760, 220, 40


def consistency_chart(runs: list[ReconciliationRun], *, threshold: float) -> dict | None:
    """Coordinates for the inline SVG chart: consistency rate per run, oldest left."""
    if not runs:
        return None
    rates = [run.consistency_rate for run in runs]
    low = min(min(rates), threshold)
    low = max(0.0, low - max((1.0 - low) * 0.25, 0.00005))
    span = (1.0 - low) or 1.0
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / max(len(runs) - 1, 1)

    def y(rate: float) -> float:
        return round(CHART_PAD + (1.0 - rate) / span * inner_h, 1)

    points = [
        {
            "x": round(CHART_PAD + i * step, 1),
            "y": y(run.consistency_rate),
            "bad": run.consistency_rate < threshold,
            "label": (
                f"run #{run.pk} {run.started_at:%Y-%m-%d %H:%M} UTC: "
                f"{run.consistency_rate:.4%} ({run.discrepancy_count} discrepancies)"
            ),
        }
        for i, run in enumerate(runs)
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "pad": CHART_PAD,
        "right": CHART_WIDTH - CHART_PAD,
        "bottom": CHART_HEIGHT - CHART_PAD,
        "polyline": " ".join(f"{p['x']},{p['y']}" for p in points),
        "points": points,
        "threshold_y": y(threshold),
        "threshold": f"{threshold:.4%}",
        "top_label": "100%",
        "bottom_label": f"{low:.4%}",
        "first": f"{runs[0].started_at:%Y-%m-%d %H:%M}",
        "last": f"{runs[-1].started_at:%Y-%m-%d %H:%M}",
    }


def _repair_confirmation(
    modeladmin, request: HttpRequest, queryset: QuerySet, *, action: str, discrepancies: QuerySet
) -> TemplateResponse:
    pending = discrepancies.filter(category__in=ERROR_CATEGORIES, repaired_at__isnull=True)
    by_category: dict[str, int] = {}
    for category in pending.values_list("category", flat=True):
        by_category[category] = by_category.get(category, 0) + 1
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Repair the Supabase copy?",
        "opts": modeladmin.model._meta,
        "queryset": queryset,
        "action": action,
        "by_category": sorted(by_category.items()),
        "total": sum(by_category.values()),
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/reconciliation/repair_confirmation.html", context)


def _report(modeladmin, request: HttpRequest, results: list[services.RepairResult]) -> None:
    upserted = sum(r.upserted for r in results)
    deleted = sum(r.deleted for r in results)
    repaired = sum(r.repaired for r in results)
    remaining = sorted({seq for r in results for seq in r.remaining})
    modeladmin.message_user(
        request,
        f"Repair: {upserted} rows re-sent, {deleted} extras deleted, {repaired} discrepancies "
        f"verified fixed, {len(remaining)} remaining.",
        messages.SUCCESS if not remaining else messages.WARNING,
    )
    skipped = {seq: why for r in results for seq, why in r.not_attempted.items()}
    if skipped:
        listed = "; ".join(f"{seq}: {why}" for seq, why in list(skipped.items())[:10])
        modeladmin.message_user(request, f"Not repaired: {listed}", messages.WARNING)


RUN_PERMISSION = "reconciliation.run_reconciliation"


def _category_links(run: ReconciliationRun, categories) -> str:
    url = reverse("admin:reconciliation_discrepancy_changelist")
    return format_html_join(
        mark_safe("<br>"),
        '<a href="{}?run__id__exact={}&amp;category__exact={}">{}: {}</a>',
        (
            (url, run.pk, category, category, count)
            for category, count in run.counts.items()
            if category in categories and count
        ),
    )


class DiscrepancyCountsMixin:
    """A run's figures as separate columns: events compared, discrepancies (errors, by
    category), and events expected to be absent (not errors), so that a clean run reads
    "discrepancies: 0" whatever else it counted."""

    @admin.display(description="events compared", ordering="events_judged")
    def events_compared(self, run: ReconciliationRun) -> str:
        return f"{run.events_judged:,}"

    @admin.display(description="discrepancies", ordering="discrepancy_count")
    def discrepancy_links(self, run: ReconciliationRun) -> str:
        if not run.discrepancy_count:
            return "0"
        return format_html(
            "<strong>{}</strong><br>{}",
            f"{run.discrepancy_count:,}",
            _category_links(run, ERROR_CATEGORIES),
        )

    @admin.display(description="expected absent (not errors)")
    def expected_absent(self, run: ReconciliationRun) -> str:
        if not run.counts.get(Category.EXPECTED_ABSENT):
            return "0"
        return _category_links(run, {Category.EXPECTED_ABSENT})


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(DiscrepancyCountsMixin, admin.ModelAdmin):
    change_list_template = "admin/reconciliation/reconciliationrun/change_list.html"
    list_display = [
        "id",
        "started_at",
        "trigger",
        "mode",
        "status",
        "seq_range",
        "chunks_display",
        "events_compared",
        "consistency",
        "discrepancy_links",
        "expected_absent",
        "duration",
        "round_trips_display",
        "rows_fetched_display",
    ]
    list_filter = ["status", "trigger", "mode"]
    date_hierarchy = "started_at"
    actions = ["repair_runs", "repair_runs_and_delete_extras"]
    readonly_fields = [f.name for f in ReconciliationRun._meta.fields] + [
        "discrepancy_links",
        "expected_absent",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs come from the service (beat, the command, "Run now")

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_PERMISSION)

    def get_urls(self):
        run_now = path(
            "run-now/",
            self.admin_site.admin_view(self.run_now_view),
            name="reconciliation_reconciliationrun_run_now",
        )
        return [run_now, *super().get_urls()]

    def run_now_view(self, request: HttpRequest) -> HttpResponse:
        """POST: queue a manual run of everything judgeable (after commit)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_run_permission(request):
            raise PermissionDenied(
                "Starting a reconciliation run needs the permission “Can start a "
                f"reconciliation run from the admin” ({RUN_PERMISSION})."
            )
        try:
            services.reconciliation_run_enqueue()
        except (services.ReconciliationBusy, services.ReconciliationUnavailable) as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(
                request,
                "Reconciliation run queued (trigger: manual). It appears in this list when "
                "a worker starts it; reload to follow it.",
                messages.SUCCESS,
            )
        return redirect("admin:reconciliation_reconciliationrun_changelist")

    @admin.display(description="seqs")
    def seq_range(self, run: ReconciliationRun) -> str:
        return f"{run.from_seq} – {run.to_seq}" if run.to_seq is not None else f"{run.from_seq} –"

    @admin.display(description="chunks compared / re-hashed")
    def chunks_display(self, run: ReconciliationRun) -> str:
        """What the run covered: an incremental run compares every sealed chunk by its
        stored digest and re-hashes few; a full pass re-hashes every one."""
        text = f"{run.chunks_compared:,} / {run.chunks_rehashed:,}"
        rewritten = sum(run.stored_digests_rewritten.values())
        return f"{text} ({rewritten:,} stored digests rewritten)" if rewritten else text

    @admin.display(description="consistency", ordering="consistency_rate")
    def consistency(self, run: ReconciliationRun) -> str:
        return "—" if run.consistency_rate is None else f"{run.consistency_rate:.4%}"

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, run: ReconciliationRun) -> str:
        return "—" if run.duration_ms is None else f"{run.duration_ms / 1000:.2f} s"

    @admin.display(description="round trips (supabase/local)")
    def round_trips_display(self, run: ReconciliationRun) -> str:
        return f"{run.round_trips_supabase} / {run.round_trips_local}"

    @admin.display(description="rows fetched (supabase/local)")
    def rows_fetched_display(self, run: ReconciliationRun) -> str:
        return f"{run.rows_fetched_supabase:,} / {run.rows_fetched_local:,}"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        threshold = float(reconciliation_setting("RECONCILIATION_CONSISTENCY_THRESHOLD"))
        chart = consistency_chart(selectors.runs_for_chart(limit=100), threshold=threshold)
        context = {
            **(extra_context or {}),
            "chart": chart,
            "can_run_now": self.has_run_permission(request),
        }
        return super().changelist_view(request, context)

    def _repair(self, request: HttpRequest, queryset: QuerySet, *, delete_extras: bool, action):
        if request.POST.get("post") != "yes":
            discrepancies = Discrepancy.objects.filter(run__in=queryset)
            return _repair_confirmation(
                self, request, queryset, action=action, discrepancies=discrepancies
            )
        try:
            results = [
                services.reconciliation_repair(run_id=run.pk, delete_extras=delete_extras)
                for run in queryset.order_by("started_at")
            ]
        except services.ReconciliationBusy as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        _report(self, request, results)
        return None

    @admin.action(description="Repair the selected runs' discrepancies", permissions=["change"])
    def repair_runs(self, request: HttpRequest, queryset: QuerySet):
        return self._repair(request, queryset, delete_extras=False, action="repair_runs")

    @admin.action(
        description="Repair the selected runs' discrepancies and delete extras in Supabase",
        permissions=["change"],
    )
    def repair_runs_and_delete_extras(self, request: HttpRequest, queryset: QuerySet):
        return self._repair(
            request, queryset, delete_extras=True, action="repair_runs_and_delete_extras"
        )


class RepairedFilter(admin.SimpleListFilter):
    title = "repaired"
    parameter_name = "repaired"

    def lookups(self, request, model_admin):
        return [("yes", "Repaired"), ("no", "Not repaired")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(repaired_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(repaired_at__isnull=True)
        return queryset


@admin.register(Discrepancy)
class DiscrepancyAdmin(admin.ModelAdmin):
    list_display = ["seq", "category", "fields_display", "criticality", "run_link", "repaired_at"]
    list_filter = ["category", "criticality", RepairedFilter, "run__trigger"]
    search_fields = ["=seq"]
    list_select_related = ["run"]
    actions = ["repair_selected", "repair_selected_and_delete_extras"]
    readonly_fields = [f.name for f in Discrepancy._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="fields")
    def fields_display(self, discrepancy: Discrepancy) -> str:
        return ", ".join(discrepancy.fields) or "—"

    @admin.display(description="run", ordering="run__started_at")
    def run_link(self, discrepancy: Discrepancy) -> str:
        url = reverse("admin:reconciliation_reconciliationrun_change", args=[discrepancy.run_id])
        return format_html('<a href="{}">#{}</a>', url, discrepancy.run_id)

    def _repair(self, request: HttpRequest, queryset: QuerySet, *, delete_extras: bool, action):
        if request.POST.get("post") != "yes":
            return _repair_confirmation(
                self, request, queryset, action=action, discrepancies=queryset
            )
        try:
            result = services.reconciliation_repair(
                discrepancy_ids=list(queryset.values_list("pk", flat=True)),
                delete_extras=delete_extras,
            )
        except services.ReconciliationBusy as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        _report(self, request, [result])
        return None

    @admin.action(description="Repair the selected discrepancies", permissions=["change"])
    def repair_selected(self, request: HttpRequest, queryset: QuerySet):
        return self._repair(request, queryset, delete_extras=False, action="repair_selected")

    @admin.action(
        description="Repair the selected discrepancies and delete extras in Supabase",
        permissions=["change"],
    )
    def repair_selected_and_delete_extras(self, request: HttpRequest, queryset: QuerySet):
        return self._repair(
            request, queryset, delete_extras=True, action="repair_selected_and_delete_extras"
        )
