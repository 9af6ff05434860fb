import edgerec_sdk


def test_all_is_pinned() -> None:
    assert edgerec_sdk.__all__ == sorted(edgerec_sdk.__all__)
    assert set(edgerec_sdk.__all__) == {
        "ClosedError", "ConfigError", "EdgerecError", "EventError", "FeedbackConfig", "FeedbackEvent", "HubAuthError", "HubError",
        "HubProtocolError", "HubStatusError", "HubTransportError", "IndexConfig", "MissingExtraError",
        "ModelError", "ModelFormatError", "ModelIntegrityError", "ModelLoadError", "NotReadyError",
        "ProfileConfig", "Recommendation", "Recommendations", "Recommender", "RecommenderConfig", "RuleError", "Status",
        "__version__",
    }


def test_public_classes_report_the_package_as_module() -> None:
    for name in edgerec_sdk.__all__:
        obj = getattr(edgerec_sdk, name)
        if isinstance(obj, type):
            assert obj.__module__ == "edgerec_sdk", name
