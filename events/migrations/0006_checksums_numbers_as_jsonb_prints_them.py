"""Recompute the checksums of events stored before the canonical form wrote numbers as
``jsonb`` prints them.

Until then a payload float below 1e-4 in magnitude (other than zero) was written in
Python's exponent form (``1e-05``) while ``jsonb`` gives back ``0.00001``; every other
number was already written the same both ways. Only events whose payload holds such a
number are read (``jsonb_path_exists`` picks them inside PostgreSQL), and a row is updated
only when its checksum changes.

The Supabase copies of these events keep their old checksum: the next reconciliation that
covers them reports each as ``checksum_invalid`` on the Supabase side, and ``manage.py
reconcile --from-seq 1 --repair`` (or the admin's repair action) rewrites them from the
local log (docs/runbook.md, "After upgrading").
"""

from django.db import migrations
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

# A number that Python writes in exponent form and jsonb in plain decimal notation.
EXPONENT_FORM_NUMBER = (
    'strict $.** ? (@.type() == "number" && @ != 0 && @ > -0.0001 && @ < 0.0001)'
)
BATCH = 1000


def checksums_recompute(apps, schema_editor) -> int:
    # The canonical form is a documented contract (docs/architecture.md), so this uses
    # the one implementation of it rather than a copy that could drift.
    from events.checksums import event_checksum_of

    Event = apps.get_model("events", "Event")
    affected = Event.objects.filter(
        RawSQL(
            "jsonb_path_exists(payload, %s::jsonpath)",
            [EXPONENT_FORM_NUMBER],
            output_field=BooleanField(),
        )
    ).order_by("seq")
    changed, updated = [], 0
    for event in affected.iterator(chunk_size=BATCH):
        checksum = event_checksum_of(event)
        if checksum != event.checksum:
            event.checksum = checksum
            changed.append(event)
        if len(changed) >= BATCH:
            updated += Event.objects.bulk_update(changed, ["checksum"])
            changed = []
    if changed:
        updated += Event.objects.bulk_update(changed, ["checksum"])
    return updated


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0005_delivery_skipped_index"),
    ]

    operations = [
        # The old checksums cannot be told apart from the new ones once rewritten, and
        # the old form is no longer computed anywhere: nothing to undo.
        migrations.RunPython(checksums_recompute, migrations.RunPython.noop, elidable=True),
    ]
