"""Alerting: the one refresh door, deadlines, the alert lifecycle, holds, the sweep,
escalation, notifications, alert events and the outbox.

Called by the services (``ingest``, ``config``) and by the surfaces; calls the engine.
Nothing here imports Celery.
"""
