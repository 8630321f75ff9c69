"""The API's URLs: ``path("api/followup/", include("followup_visibility.api.urls"))``."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from followup_visibility.api import register, schema

app_name = "followup_visibility_api"

router = SimpleRouter()
router.register("register", register.RegisterViewSet, basename="register")

urlpatterns = [
    path("schema/", schema.SchemaView.as_view(), name="schema"),
    *router.urls,
]
