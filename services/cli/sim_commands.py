"""`orch sim`: talk to the sim controllers directly (SimulatorService), for
tests and demos that need drift behind the orchestrator's back."""

from __future__ import annotations

import sys

import click
import grpc

from cli.home import orch_home
from cli.settings import Settings, pass_settings
from orchestration.model.lifecycle import STATES_BY_NAME
from orchestration.runtime.credentials import engine_credential_for
from orchestration.v1 import sim_pb2 as pb
from orchestration.v1 import sim_pb2_grpc as pb_grpc
from orchestration_sdk.runtime.tls import TlsConfig, channel
from orchestration_sdk.runtime.wire import bearer_metadata

# The file `orch up` keeps the engine key in: the sims require what is derived from it for their name.
CREDENTIAL_FILE = "engine-credential"
SIM_NAME = "Internal"


@click.group()
def sim() -> None:
    """The sim controller (drift for tests and demos)."""


@sim.command("set-state")
@click.argument("uuid")
@click.argument("state", type=click.Choice(list(STATES_BY_NAME)))
@pass_settings
def set_state(settings: Settings, uuid: str, state: str) -> None:
    """Force the real state of instance UUID in the sim ("initial": the instance is gone)."""
    connection = settings.connection()
    if not connection.sims:
        raise click.ClickException("no sim controller addresses in connection.json: restart `orch up` to record them")
    credential_path = orch_home(settings.home) / CREDENTIAL_FILE
    try:
        metadata = bearer_metadata(engine_credential_for(credential_path.read_text().strip(), SIM_NAME))
    except OSError as err:
        raise click.ClickException(f"cannot read the engine credential {credential_path}: {err.strerror}") from err
    request = pb.SetStateRequest(uuid=uuid, state=STATES_BY_NAME[state])
    unreachable = []
    # Each replica holds its own instances: ask them in turn until one has it.
    for address in connection.sims:
        with channel(address, settings.tls if settings.tls.ca else TlsConfig(ca=connection.tls_ca), aio=False) as open_channel:
            try:
                reply = pb_grpc.SimulatorServiceStub(open_channel).SetState(request, metadata=metadata, timeout=10)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    unreachable.append(address)
                    continue
                raise
        if reply.known:
            click.echo(f"instance {uuid} is now {state} in the sim at {address}")
            return
    note = f" ({len(unreachable)} of them unreachable: {', '.join(unreachable)})" if unreachable else ""
    click.echo(f"error: no sim controller knows instance {uuid}; asked {len(connection.sims)}{note}", err=True)
    sys.exit(1)


def register(group: click.Group) -> None:
    """Add the sim commands to the orch group."""
    group.add_command(sim)
