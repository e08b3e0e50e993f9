"""orchestration/v1/dispatcher.proto: compiled into the controller SDK, which the engine builds on."""

from orchestration_sdk.v1.dispatcher_pb2 import *  # noqa: F401,F403
