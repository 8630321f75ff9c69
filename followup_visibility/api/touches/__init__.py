"""``touches/``: record touches, one or a batch, and read an opportunity's merged timeline.

Recording goes through ``ingest.touches.record_touches``: idempotent by ``(source,
external_id)``, every item validated before anything is written. The view only parses the
JSON, checks that each target is in the caller's scope (a target out of scope fails exactly
like a missing one) and says who the actor is (docs/api.md).
"""

from followup_visibility.api.touches.views import TouchViewSet

__all__ = ["TouchViewSet"]
