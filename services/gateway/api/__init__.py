"""gRPC servicers of the gateway API, one module per service."""
