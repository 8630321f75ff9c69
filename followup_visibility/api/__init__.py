"""The REST API. The host mounts it with one include::

path("api/followup/", include("followup_visibility.api.urls"))
"""
