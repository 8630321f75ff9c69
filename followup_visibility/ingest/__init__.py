"""Ingestion services: touches, CRM sync, handoffs, merges, next actions, stalls, segments.

Each writes what it owns, then ends in :func:`followup_visibility.alerting.refresh.refresh`.
"""
