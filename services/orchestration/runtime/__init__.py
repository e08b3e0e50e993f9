"""What the engine's service processes add to the SDK's runtime
(``orchestration_sdk.runtime``: gRPC server, status mapping, TLS, traces,
logs, metrics, process start-up, the one back-off rule, bounded concurrency,
stream batching).

The engine's own metrics (``metrics``), issuing controller credentials
(``credentials``), the gRPC health check of containers and probes
(``healthcheck``), and how the services import nats-py (``nats_import``).
"""
