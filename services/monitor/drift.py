"""Drift: the real state a controller reports differs from the stored one.
The stored state is corrected with a compare-and-set and a drift event is
recorded; a record that changed since it was read is left alone (whoever
changed it knew more than this poll)."""

from __future__ import annotations

import logging

from monitor.inventory import Watched
from monitor.probe import Observation
from orchestration.errors import Aborted, NotFound
from orchestration.events import EventRecorder, new_event
from orchestration.lifecycle import FAILURE, state_name
from orchestration.repository import Repository
from orchestration.v1 import model_pb2 as pb

log = logging.getLogger("monitor.drift")

# Compare-and-set attempts when only other fields of the record changed.
_ATTEMPTS = 3


async def correct(repo: Repository, recorder: EventRecorder, watched: Watched, observed: Observation) -> bool:
    """Store the observed state and record a drift event; False when nothing was written."""
    r = watched.record
    seen = r.instance.state
    instance, revision = r.instance, r.revision
    for _ in range(_ATTEMPTS):
        if instance.state != seen or instance.state == observed.state:
            return False
        updated = pb.Instance()
        updated.CopyFrom(instance)
        updated.state = observed.state
        # `error` says why an instance is in failure; the controller's word replaces the engine's.
        updated.error = f"controller {observed.controller} reports the instance in failure" if observed.state == FAILURE else ""
        try:
            await repo.put_instance(watched.domain, watched.solution, r.element, r.cluster, updated, revision)
            break
        except Aborted:
            try:
                fresh = await repo.get_instance(watched.domain, watched.solution, r.element, r.cluster, watched.uuid)
            except NotFound:
                return False
            instance, revision = fresh.value, fresh.revision
    else:
        return False
    # The stored event has no instance fields: the comment names the instance.
    comment = (
        f"instance {watched.uuid} of {r.element}/{r.cluster}: state {state_name(seen) or 'initial'} -> "
        f"{state_name(observed.state)} (reported by controller {observed.controller})"
    )
    log.info("drift of instance %s in %s/%s: %s", watched.uuid, watched.domain, watched.solution, comment,
             extra={"instance": watched.uuid, "solution": watched.solution})
    task = pb.Task(
        type=pb.TASK_TYPE_INSTANCE, domain=watched.domain, solution=watched.solution, element=r.element,
        cluster=r.cluster, instance=watched.uuid, state=observed.state,
    )
    await recorder.record(new_event(task, pb.EVENT_TYPE_DRIFT, comment), task, state=observed.state)
    return True
