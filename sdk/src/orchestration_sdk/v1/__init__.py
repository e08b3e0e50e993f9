"""The contracts the SDK ships, compiled at build time from the repository's
proto/orchestration/v1/{model,controller,dispatcher}.proto by
sdk/build_contracts.py: ``model_pb2``, ``controller_pb2`` (and ``_grpc``),
``dispatcher_pb2`` (and ``_grpc``)."""
