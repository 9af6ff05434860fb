"""The Django ``AppConfig``. ``ready()`` registers checks and a settings listener; it never builds a recommender."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class EdgerecConfig(AppConfig):
    name = "edgerec_sdk.integrations.django"
    label = "edgerec"
    verbose_name = "edgerec recommendations"
    default = True

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from . import checks  # noqa: F401  (registers the system checks)

        setting_changed.connect(_on_setting_changed, dispatch_uid="edgerec_setting_changed")


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "EDGEREC":
        from . import close_recommender

        close_recommender()
