"""The web console: served by the gateway on its own HTTP port, it calls the
same servicers through the same gate as gRPC and the bus."""
