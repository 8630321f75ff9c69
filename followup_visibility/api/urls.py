"""The API's URLs: ``path("api/followup/", include("followup_visibility.api.urls"))``."""

from __future__ import annotations

from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from followup_visibility.api import (
    alerts,
    base,
    configuration,
    metrics,
    notifications,
    opportunities,
    reference,
    register,
    schema,
    suppressions,
    touches,
)

app_name = "followup_visibility_api"

router = SimpleRouter()
router.register("register", register.RegisterViewSet, basename="register")
router.register("alerts", alerts.AlertViewSet, basename="alert")
router.register("suppressions", suppressions.SuppressionViewSet, basename="suppression")
router.register("inhibition-rules", configuration.InhibitionRuleViewSet, basename="inhibition-rule")
router.register("sla-policies", configuration.SlaPolicyViewSet, basename="sla-policy")
router.register("notifications", notifications.NotificationViewSet, basename="notification")
router.register("touches", touches.TouchViewSet, basename="touch")
router.register("opportunities", opportunities.OpportunityViewSet, basename="opportunity")
router.register("metrics", metrics.MetricsViewSet, basename="metrics")

urlpatterns = [
    path("schema/", schema.SchemaView.as_view(), name="schema"),
    path("reference/", reference.ReferenceView.as_view(), name="reference"),
    *router.urls,
    # Last: any other path answers the API's JSON 404, not the host's page.
    re_path(r"^", base.Missing.as_view(), name="missing"),
]
