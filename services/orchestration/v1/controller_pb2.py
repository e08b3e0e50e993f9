"""orchestration/v1/controller.proto: compiled into the controller SDK, which the engine builds on."""

from orchestration_sdk.v1.controller_pb2 import *  # noqa: F401,F403
