"""The gateway: the external interfaces (gRPC API, the `orch` CLI, the NATS
bus interface). It validates, persists and publishes; it never runs tasks."""
