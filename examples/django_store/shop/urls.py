from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("product/<str:item_id>", views.product, name="product"),
    path("click", views.click, name="click"),
    path("api/for-you/<str:user>", views.api_for_you, name="api-for-you"),
    path("api/similar/<str:item_id>", views.api_similar, name="api-similar"),
    path("api/click", views.api_click, name="api-click"),
]
