"""The staff API under /api/: include("quotas.api.staff_urls")."""

from __future__ import annotations

from django.urls import path, re_path
from rest_framework.routers import DefaultRouter

from . import schema  # noqa: F401  (OpenAPI descriptions of the /v1/ views and their auth)
from .staff import APIKeyViewSet, TeamViewSet, TierViewSet, UserQuotaViewSet
from .staff_usage import UsageView

app_name = "quotas_staff"

router = DefaultRouter()
router.include_root_view = False
router.include_format_suffixes = False
router.register("tiers", TierViewSet, basename="tier")
router.register("quotas", UserQuotaViewSet, basename="userquota")
router.register("teams", TeamViewSet, basename="team")
router.register("keys", APIKeyViewSet, basename="apikey")

urlpatterns = [
    *router.urls,
    path("usage/", UsageView.as_view(), name="usage"),
    re_path(r"^usage\.(?P<format>csv|json)$", UsageView.as_view(), name="usage-export"),
]
