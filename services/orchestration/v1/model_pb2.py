"""orchestration/v1/model.proto: compiled into the controller SDK, which the engine builds on."""

from orchestration_sdk.v1.model_pb2 import *  # noqa: F401,F403
