"""Shared core of the orchestration engine, in three layers.

- ``orchestration.model``: the information model and the lifecycle rules
  (names, lifecycle, planner, validation, codec, rendering, diff).
  Pure: no I/O, imports neither NATS nor gRPC (a test checks it).
- ``orchestration.store``: the NATS side: KV buckets, the repository of
  typed stores, leases, requests, events, subjects, publisher.
- ``orchestration.runtime``: what the engine's services add to the SDK's
  runtime: their metrics, issuing controller credentials, health checks.

Below them all is the controller SDK (``orchestration_sdk``, its own
distribution in sdk/): the runtime every process is built from (gRPC server,
TLS, telemetry, logs, metrics, back-off, concurrency), the errors answered
with a gRPC status, the lifecycle table and the contracts shared with
controllers. It imports nothing of the engine.

Generated contracts live in ``orchestration.v1`` (model, controller and
dispatcher re-export the SDK's). A layer imports only the ones above it in
this list (store and runtime use model); services import the layers and the
SDK, never each other. The launcher (``orch up``) is the CLI's own package,
``cli``.
"""
