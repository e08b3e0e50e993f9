"""The sim's SimulatorService: forces an instance's real state behind the
orchestrator's back (drift for tests and demos; `orch sim set-state`)."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from orchestration.v1 import sim_pb2 as pb
from orchestration.v1 import sim_pb2_grpc as pb_grpc
from orchestration_sdk.convert import STATE_VALUES

SIMULATOR_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SimulatorService"].full_name

# State enum value -> the sim's state name.
_STATE_NAMES = {value: name for name, value in STATE_VALUES.items()}

# set_state(uuid, state name); raises KeyError for an instance the sim does not have.
SetState = Callable[[str, str], None]


class SimulatorServicer(pb_grpc.SimulatorServiceServicer):
    """Serves SetState over the sim's instance table."""

    def __init__(self, set_state: SetState, has: Callable[[str], bool]) -> None:
        self._set_state = set_state
        self._has = has

    async def SetState(self, request: pb.SetStateRequest, context: grpc.aio.ServicerContext) -> pb.SetStateResponse:
        state = _STATE_NAMES.get(request.state)
        if state is None or not request.uuid:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "uuid and state (initial, inactive, active or failure) are required"
            )
            return pb.SetStateResponse()  # not reached: abort raises
        # Several sim replicas each hold their own instances: "not mine" is an
        # answer (known=false), not an error, so a caller can ask them in turn.
        if not self._has(request.uuid):
            return pb.SetStateResponse(known=False)
        self._set_state(request.uuid, state)
        return pb.SetStateResponse(known=True)


def add_simulator(set_state: SetState, has: Callable[[str], bool]) -> Callable[[grpc.aio.Server], None]:
    """A registration function for `ExtraService`."""

    def add(server: grpc.aio.Server) -> None:
        pb_grpc.add_SimulatorServiceServicer_to_server(SimulatorServicer(set_state, has), server)

    return add
