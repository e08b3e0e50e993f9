"""Controllers (layer D): one process per component type family, each built on
the controller SDK in `controllers.sdk`. Controllers import only the SDK and the
generated contracts, never another service."""
