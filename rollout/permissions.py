"""Who may change the rollout: one permission per kind of change.

Being staff lets a user see the panel (state, health, alerts, audit) and acknowledge
alerts. Changing anything needs a permission of its own, granted to a user or a group in
the admin (Users or Groups → permissions); superusers hold every permission:

- ``rollout.set_stage``: set the stage, configure automatic promotion, request a forced
  promotion and approve or reject another account's request;
- ``rollout.operate_kill_switch``: throw and release the kill switch;
- ``rollout.change_thresholds``: edit the rollback thresholds (the model's own change
  permission, checked by the admin's Thresholds page).

Entry points (the panel, any future API) ask ``rollout_permission_missing`` before they
call a service; the services themselves also serve the system and the command line,
which act without a user.
"""

from __future__ import annotations

SET_STAGE = "rollout.set_stage"
OPERATE_KILL_SWITCH = "rollout.operate_kill_switch"
CHANGE_THRESHOLDS = "rollout.change_thresholds"

# The panel's actions and the permission each needs.
ACTION_PERMISSION: dict[str, str] = {
    "stage": SET_STAGE,
    "promotion": SET_STAGE,
    # "Promote anyway" (four eyes): asking, and a second account approving or rejecting.
    "force_request": SET_STAGE,
    "force_approve": SET_STAGE,
    "force_reject": SET_STAGE,
    "kill": OPERATE_KILL_SWITCH,
    "resume": OPERATE_KILL_SWITCH,
}

PERMISSION_LABEL: dict[str, str] = {
    SET_STAGE: "Can change the rollout stage and automatic promotion",
    OPERATE_KILL_SWITCH: "Can throw and release the kill switch",
    CHANGE_THRESHOLDS: "Can change thresholds",
}


def rollout_permission_missing(user, *, action: str) -> str | None:
    """Why ``user`` may not do the panel ``action`` (a sentence naming the permission),
    or None when they may. An unknown action is never allowed."""
    permission = ACTION_PERMISSION.get(action)
    if permission is None:
        return f"Unknown action {action!r}."
    if user.is_active and user.is_staff and user.has_perm(permission):
        return None
    return (
        f"You need the permission “{PERMISSION_LABEL[permission]}” ({permission}); "
        "ask an administrator to grant it to you or to your group."
    )


def rollout_permissions_for(user) -> dict[str, str | None]:
    """For the panel: per action, None when allowed, else the reason it is not."""
    reasons: dict[str, str | None] = {
        action: rollout_permission_missing(user, action=action) for action in ACTION_PERMISSION
    }
    reasons["thresholds"] = (
        None
        if user.is_active and user.is_staff and user.has_perm(CHANGE_THRESHOLDS)
        else (
            f"You need the permission “{PERMISSION_LABEL[CHANGE_THRESHOLDS]}” "
            f"({CHANGE_THRESHOLDS}) to edit them."
        )
    )
    return reasons
