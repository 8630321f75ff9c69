"""Configuration services: SLA policy versions, calendars, escalation policies, suppression
rules, recompute planning and the what-if preview.

Work that must follow a committed change (a recompute) is written to the outbox.
"""
