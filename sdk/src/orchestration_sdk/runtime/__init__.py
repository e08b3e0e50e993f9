"""What every process of the suite is built from, controllers and engine
services alike (the engine imports these; they import nothing of it).

gRPC server with guard and status mapping (``grpcserver``, ``status``), TLS
(``tls``), traces (``telemetry``), structured logs (``logs``), metrics
(``metrics``), process start-up and signals (``process``), the controller's
side of the credentials (``credentials``), the one back-off rule
(``backoff``), bounded concurrency (``concurrency``), stream batching
(``batching``) and what clients and servers agree on (``wire``).
"""
