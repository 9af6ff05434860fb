from __future__ import annotations

from django.urls import include, path

from edgerec_sdk.integrations.django import metrics_view

# /metrics: this worker's edge metrics for Prometheus (keep it off the public internet)
urlpatterns = [path("", include("shop.urls")), path("metrics", metrics_view, name="metrics")]
