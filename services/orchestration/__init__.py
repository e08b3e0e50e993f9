"""Shared core of the orchestration engine.

Pure parts (no I/O): names, lifecycle, codec, validation, errors.
NATS plumbing beside them: subjects, connection, repository.
Process plumbing: home (files under $ORCH_HOME), grpcserver.
Generated contracts live in ``orchestration.v1``.
"""
