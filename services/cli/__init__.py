"""The `orch` command line: talks to the gateway over gRPC."""
