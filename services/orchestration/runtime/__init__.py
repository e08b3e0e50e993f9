"""What every service process is built from.

gRPC server with guard and status mapping (``grpcserver``, ``status``), TLS
(``tls``), traces (``telemetry``), structured logs (``logs``), metrics
(``metrics``), health checks (``healthcheck``), process start-up and signals
(``process``), the one back-off rule (``backoff``), bounded concurrency
(``concurrency``) and stream batching (``batching``).
"""
