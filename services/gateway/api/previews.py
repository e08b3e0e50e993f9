"""`plan --preview`: the planned operations as their controllers would
receive them, sent to a dispatcher (which asks each controller for its dry
run, see dispatcher.previews), and the answers put on the planned
transitions. Nothing is stored and nothing runs."""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from orchestration.model.lifecycle import ACTIVE
from orchestration.store.subjects import Subjects
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import Unavailable

# The most planned operations previewed in one plan (each one a controller's
# dry run: a playbook in check mode takes seconds).
PREVIEW_LIMIT = 50
# How long the gateway waits for a dispatcher's answers.
ANSWER_SECONDS = 180.0


def _live_endpoints(cluster: pb.Cluster) -> list[str]:
    """Endpoints of the cluster's active members that stay, as a run sends them."""
    return [i.endpoint for i in cluster.instances if i.endpoint and i.state == ACTIVE and not i.remove]


def operations(domain: str, solution: pb.Solution, transitions: list[gw.PlannedTransition]) -> rpb.PreviewBatch:
    """The operations a run would send for the transitions (the first
    PREVIEW_LIMIT), each with its cluster's controller."""
    clusters = {(e.name, c.version): (e, c) for e in solution.elements for c in e.clusters}
    endpoints = {key: _live_endpoints(cluster) for key, (_, cluster) in clusters.items()}
    batch = rpb.PreviewBatch()
    for planned in transitions[:PREVIEW_LIMIT]:
        element, cluster = clusters[(planned.element, planned.cluster)]
        instance = next((i for i in cluster.instances if i.uuid == planned.instance), pb.Instance())
        providers = [cpb.Provider(relationship=rel.name, type=rel.type, element=rel.element, cluster=rel.version,
                                  endpoints=endpoints.get((rel.element, rel.version), []), configuration=rel.configuration)
                     for rel in cluster.relationships]
        batch.controllers.append(cluster.controller)
        batch.operations.append(cpb.Operation(
            operation_id=f"preview-{planned.instance}-{planned.transition}", transition=planned.transition,
            instance=cpb.InstanceReference(domain=domain, solution=solution.name, element=element.name,
                                           cluster=cluster.version, uuid=planned.instance, component=element.component,
                                           component_version=cluster.version),
            configuration=cluster.configuration, parameters=cluster.parameters, providers=providers,
            siblings=[e for e in endpoints[(planned.element, planned.cluster)] if e != instance.endpoint],
            attempt=1, endpoint=instance.endpoint))
    return batch


async def ask(nc: Client, subjects: Subjects, batch: rpb.PreviewBatch) -> list[rpb.PreviewAnswer]:
    """Each operation's dry run, from whichever dispatcher answers."""
    try:
        reply = await nc.request(subjects.preview, batch.SerializeToString(), timeout=ANSWER_SECONDS)
    except NoRespondersError as err:
        raise Unavailable("no dispatcher is running to ask the controllers for a preview; try again") from err
    except NatsTimeout as err:
        raise Unavailable(f"no preview within {ANSWER_SECONDS:g} s; plan without --preview") from err
    return list(rpb.PreviewAnswers.FromString(reply.data).answers)


async def previewed(nc: Client, subjects: Subjects, domain: str, solution: pb.Solution,
                    transitions: list[gw.PlannedTransition]) -> list[gw.PlannedTransition]:
    """The transitions, the first PREVIEW_LIMIT with their controllers' dry runs."""
    if not transitions:
        return transitions
    answers = await ask(nc, subjects, operations(domain, solution, transitions))
    for planned, answer in zip(transitions, answers):
        planned.previewed = True
        planned.preview = answer.text if not answer.error else answer.error
    return transitions
