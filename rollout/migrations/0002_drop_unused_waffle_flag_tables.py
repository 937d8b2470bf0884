"""Drop the tables waffle's own migrations create for ``waffle.Flag``.

waffle's initial migration predates swappable flag models, so it creates ``waffle_flag``
and its many-to-many tables even when ``WAFFLE_FLAG_MODEL`` points elsewhere
(django-waffle issues #317 and #338). Nothing uses them here, and their foreign keys to
``auth_user`` and ``auth_group`` stop ``flush`` (and so the test suite) from truncating
those tables. django-waffle is pinned below 5.1 in pyproject.toml; re-check this when
upgrading it.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("rollout", "0001_initial"),
        ("waffle", "0004_update_everyone_nullbooleanfield"),
    ]

    operations = [
        migrations.RunSQL(
            "DROP TABLE IF EXISTS waffle_flag_groups, waffle_flag_users, waffle_flag;",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
