"""The engine: business time, calendars, SLA resolution, clocks, severity, timeline fold,
meaningful-touch rules, identity normalisation, routing and access scope.

Pure computation over values the caller loads, and loaders that only read. Nothing here
writes to the database or imports Celery; the layers above call it.
"""
