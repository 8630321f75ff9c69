"""``alerts/``: the alert queue, the triage actions on one alert, and the same actions in bulk.

Every write goes through the domain function that owns it: the lifecycle for acknowledge,
snooze, dismiss and resolve, ``ingest.ownership`` for reassign, ``config.suppressions`` for
suppress. A refusal about the input is a 400 naming the field; a refusal because of the
alert's (or its opportunity's) state, such as acknowledging a resolved alert, is a 409. In
bulk each alert (each opportunity, for reassign and suppress) is its own transaction: one
refused item never undoes the others, and the response reports each item (docs/api.md).
"""

from followup_visibility.api.alerts.views import AlertViewSet

__all__ = ["AlertViewSet"]
