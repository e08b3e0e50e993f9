"""Controllers (layer D): one process per component type family, each built on
the controller SDK (`orchestration_sdk`, the separately installable package in
sdk/). Controllers import only the SDK and the generated contracts, never
another service nor the engine's core (tests/test_layers.py)."""
