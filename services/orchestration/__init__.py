"""Shared core of the orchestration engine, in three layers.

- ``orchestration.model``: the information model and the lifecycle rules
  (names, lifecycle, planner, validation, codec, rendering, diff, errors).
  Pure: no I/O, imports neither NATS nor gRPC (a test checks it).
- ``orchestration.store``: the NATS side: KV buckets, the repository of
  typed stores, leases, requests, events, subjects, publisher.
- ``orchestration.runtime``: what every service process needs: gRPC server,
  TLS, telemetry, logs, metrics, health checks, the one back-off rule,
  bounded concurrency, the mapping of model errors to gRPC status codes.

Generated contracts live in ``orchestration.v1``. A layer imports only the
ones above it in this list (store and runtime use model; store uses runtime's
concurrency and back-off helpers); services import the layers, never each
other. The launcher (``orch up``) is the CLI's own package, ``cli``.
"""
