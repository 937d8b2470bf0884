"""``manage.py rollout status|stage S [--force --reason R]|kill --reason R|resume --reason R|
analyse``: the rollout for operators without a browser. Changes are audited as the system
user ("system") unless ``--as USERNAME`` names the operator.

Raising the stage needs a passing analysis of the stage in force, and a projected load that
fits the Supabase plan (``SUPABASE_PLAN``, ``rollout/quotas.py``); without either the
command exits non-zero and says why, unless ``--force --reason R`` (audited as forced, with
what was overridden). ``status`` shows the projection for this stage and the next."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.table import Table

from rollout import selectors, services
from rollout.models import STAGE_PERCENT


def _fmt(value, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{suffix}"
    return f"{value}{suffix}"


class Command(BaseCommand):
    help = "Show or change the Supabase Realtime rollout (stage, kill switch)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        sub.add_parser("status", help="stage, kill switch, cohorts, health, open alerts")
        stage = sub.add_parser("stage", help="move to a stage")
        stage.add_argument("stage", choices=[str(s) for s in STAGE_PERCENT])
        stage.add_argument("--reason", default=None)
        stage.add_argument(
            "--force",
            action="store_true",
            help="raise the stage without a passing analysis or over the Supabase plan's "
            "quotas (needs --reason; audited as forced)",
        )
        sub.add_parser("analyse", help="record an analysis of the stage in force now")
        report = sub.add_parser(
            "report", help="stages with their analyses and verdicts, breaches, rollbacks, ..."
        )
        report.add_argument("--json", action="store_true", help="the whole report as JSON")
        report.add_argument("--csv", action="store_true", help="the timeline as CSV")
        for name, text in (("kill", "throw the kill switch"), ("resume", "release it")):
            command = sub.add_parser(name, help=text)
            command.add_argument("--reason", required=True)
        for command in sub.choices.values():
            command.add_argument("--as", dest="username", help="audit as this (staff) user")

    def handle(self, *args, action: str, username: str | None = None, **options) -> None:
        self.console = Console(file=self.stdout, width=120)
        if action == "status":
            self._status()
            return
        if action == "analyse":
            self._analyse()
            return
        if action == "report":
            self._report(as_json=options["json"], as_csv=options["csv"])
            return
        actor = self._actor(username)
        force = bool(options.get("force"))
        if force and options.get("reason") is None:
            raise CommandError("--force needs --reason: say why the evidence is overridden")
        reason = options.get("reason")
        if reason is None and action == "stage":
            reason = "set from the command line"
        reason = (reason or "").strip()
        if not reason:
            raise CommandError("--reason must not be empty")
        try:
            if action == "stage":
                state = services.rollout_stage_set(
                    stage=options["stage"], actor=actor, reason=reason, force=force,
                    force_quota=force,
                )  # fmt: skip
                self.stdout.write(f"stage is now {state.stage}" + (" (forced)" if force else ""))
            elif action == "kill":
                _, changed = services.rollout_kill(actor=actor, reason=reason)
                self.stdout.write("kill switch thrown" if changed else "kill switch already on")
            elif action == "resume":
                state, changed = services.rollout_resume(actor=actor, reason=reason)
                self.stdout.write(
                    f"resumed at stage {state.stage}" if changed else "kill switch was not on"
                )
        except (services.PromotionNeedsAnalysis, services.QuotaExceeded) as exc:
            raise CommandError(
                f"{exc}. To promote anyway: --force --reason R (audited as forced)."
            ) from exc
        except services.RolloutError as exc:
            raise CommandError(str(exc)) from exc

    def _report(self, *, as_json: bool, as_csv: bool) -> None:
        import json

        from rollout.report import report_csv, rollout_report

        if as_json and as_csv:
            raise CommandError("choose one of --json and --csv")
        report = rollout_report()
        if as_json:
            self.stdout.write(json.dumps(report, indent=2))
            return
        if as_csv:
            self.stdout.write(report_csv(report), ending="")
            return
        state = report["state"]
        self.stdout.write(
            f"Rollout report, {report['generated_at']}: stage {state['stage']}"
            + (" (KILLED)" if state["killed"] else "")
        )
        self.stdout.write("\nStages")
        for run in report["stages"]:
            self.stdout.write(
                f"  {run['stage']:>6}  {run['started_at'] or '?'} -> {run['ended_at'] or 'now'}"
                f"  verdict {run['verdict'] or '-'}"
                + ("  FORCED" if run["forced"] else "")
                + (f"  by {run['started_by']}: {run['reason']}" if run["started_by"] else "")
            )
            for analysis in run["analyses"]:
                label = f"#{analysis['id']}" if analysis["recorded"] else "provisional"
                sb = analysis["transports"]["supabase"]["prober"]
                ws = analysis["transports"]["websocket"]["prober"]
                self.stdout.write(
                    f"          analysis {label}{' (final)' if analysis['final'] else ''} "
                    f"to {analysis['window_end']}: {analysis['verdict']}; p95 supabase "
                    f"{_fmt(sb['p95_ms'], ' ms')}, websocket {_fmt(ws['p95_ms'], ' ms')}"
                )
                for reason in analysis["reasons"]:
                    self.stdout.write(f"            - {reason}")
        self.stdout.write(
            "\nBreaches, rollbacks, resumes, forced promotions, reconciliation runs and alerts"
        )
        for event in report["events"]:
            self.stdout.write(
                f"  {event['at']}  {event['kind']:<26} {event['actor']}: "
                f"{event['from']} -> {event['to']}  {event['detail']}"
            )
        if not report["events"]:
            self.stdout.write("  none")

    def _analyse(self) -> None:
        analysis = services.stage_analysis_record(trigger="manual")
        if analysis is None:
            raise CommandError("another analysis is being recorded right now; try again")
        self._analysis_print(analysis, title=f"analysis #{analysis.pk} recorded")

    def _analysis_print(self, analysis, *, title: str) -> None:
        self.stdout.write(
            f"{title}: stage {analysis.stage}, {analysis.window_start:%Y-%m-%d %H:%M:%S} to "
            f"{analysis.window_end:%Y-%m-%d %H:%M:%S}: {analysis.verdict.upper()}"
        )
        for reason in analysis.reasons:
            self.stdout.write(f"  - {reason}")

    def _actor(self, username: str | None):
        if username is None:
            return None
        user = get_user_model().objects.filter(username=username, is_staff=True).first()
        if user is None:
            raise CommandError(f"no staff user named {username!r}")
        return user

    def _quotas(self, state) -> None:
        from rollout.quotas import quota_outlook

        outlook = quota_outlook(state=state)
        plan, load = outlook.plan, outlook.load
        pages = load.open_pages
        self.console.print(
            f"Supabase plan: {plan.name} (connections {_fmt(plan.connections)}, messages/s "
            f"{_fmt(plan.messages)}, joins/s {_fmt(plan.joins)}, payload {plan.payload_kb} KB); "
            "open pages: "
            + (
                "unknown (Redis unreachable)"
                if pages is None
                else f"websocket {pages.get('websocket', 0)}, supabase {pages.get('supabase', 0)}"
            )
            + f"{', prober on supabase' if load.prober_on_supabase else ''}; events "
            f"{load.events_per_second:.2f}/s in {load.statements_per_second:.2f} upserts/s"
        )
        table = Table(title="Supabase quotas (projected from the open pages and event rate)")
        for column in (
            "stage", "connections", "messages/s", "one per event", "window ms", "pages moved",
            "verdict",
        ):  # fmt: skip
            table.add_column(column, justify="left" if column in ("stage", "verdict") else "right")
        for label, projection in (("now", outlook.current), ("next", outlook.following)):
            if projection is None:
                continue
            limit_c = "" if plan.connections is None else f" / {plan.connections}"
            limit_m = "" if plan.messages is None else f" / {plan.messages}"
            table.add_row(
                f"{label}: {projection.stage}", f"{projection.connections}{limit_c}",
                f"{projection.messages_per_second:g}{limit_m}",
                f"{projection.messages_uncoalesced:g}", str(projection.window_ms),
                str(projection.pages_moved),
                "[bold red]over: [/]" + "; ".join(projection.exceeded)
                if projection.exceeded
                else ("fits" if plan.limited else "no quota known (SUPABASE_PLAN unset)"),
            )  # fmt: skip
        self.console.print(table)

    def _status(self) -> None:
        state = selectors.rollout_state_get()
        report = selectors.health_report(not_before=state.resumed_at)
        sizes = selectors.cohort_sizes()
        summary = Table(title="Rollout", show_header=False)
        summary.add_row("stage", f"{state.stage} ({selectors.supabase_flag_percent():g} %)")
        summary.add_row(
            "kill switch",
            f"[bold red]ON[/] since {state.killed_at:%Y-%m-%d %H:%M:%S} — {state.kill_reason}"
            if state.killed
            else "off",
        )
        summary.add_row(
            "auto promotion",
            f"{'on' if state.auto_promotion_enabled else 'off'}, dwell "
            f"{state.promotion_dwell_seconds} s",
        )
        summary.add_row("cohorts", f"websocket {sizes['websocket']}, supabase {sizes['supabase']}")
        analysis = selectors.stage_analysis_latest(state=state)
        summary.add_row(
            "analysis",
            f"{analysis.verdict} (#{analysis.pk}, {analysis.window_end:%Y-%m-%d %H:%M:%S})"
            if analysis
            else "none yet for this stage (raising it needs a passing one)",
        )
        self.console.print(summary)
        self._quotas(state)

        health = Table(title="Health")
        for column in (
            "transport", "source", "window", "ops", "failures", "error rate", "latency n",
            "p50 ms", "p95 ms", "p99 ms", "conn. failures in a row",
        ):  # fmt: skip
            health.add_column(
                column, justify="left" if column in ("transport", "source") else "right"
            )
        for item in report.rows:
            health.add_row(
                item.transport, item.source_label, f"{item.window_seconds} s",
                f"{item.operations:g}", f"{item.failures:g}",
                "-" if item.error_rate is None else f"{item.error_rate:.2%}",
                str(item.latency_samples), _fmt(item.p50_ms), _fmt(item.p95_ms),
                _fmt(item.p99_ms), _fmt(item.consecutive_connect_failures),
            )  # fmt: skip
        self.console.print(health)
        self.console.print(
            f"latency baseline: {report.baseline.p95_ms:.1f} ms ({report.baseline.source})"
        )
        if report.judged_since:
            self.console.print(
                f"judging samples since the resume at {report.judged_since:%Y-%m-%d %H:%M:%S}"
            )
        if report.breaches:
            for breach in report.breaches:
                self.console.print(f"[bold red]breach[/] {breach.message}")
            self.console.print("[bold]promotion blocked[/] while a threshold is breached")
            if state.stage == "shadow" and not state.killed:
                self.console.print(
                    "shadow stage: a shadow_breach alert is raised; the kill switch stays off"
                )
        else:
            self.console.print("no threshold breached")

        alerts = selectors.open_alerts()
        if alerts:
            table = Table(title="Open alerts")
            for column in ("severity", "kind", "count", "last seen", "message"):
                table.add_column(column)
            for alert in alerts:
                table.add_row(
                    alert.severity, alert.kind, str(alert.count),
                    f"{alert.last_seen:%Y-%m-%d %H:%M:%S}", alert.message[:80],
                )  # fmt: skip
            self.console.print(table)
