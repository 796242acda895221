from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from quotas.api.views import not_found
from quotas.metrics import metrics_view

from .views import home

urlpatterns = [
    path("", home, name="home"),
    path("admin/", admin.site.urls),
    path("v1/", include("quotas.api.urls")),
    re_path(r"^v1$", not_found),  # no redirect to /v1/: a JSON 404 like any unknown /v1 path
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("quotas.api.staff_urls")),
    path("metrics", metrics_view, name="metrics"),
]
