"""Drift: the real state a controller reports differs from the stored one.
The stored state is corrected with a compare-and-set and a drift event is
recorded; a record that changed since it was read is left alone (whoever
changed it knew more than this poll).

A stored `failure` is the engine's verdict that an operation failed for good;
a controller only sees that the instance still exists (inactive or active),
so that is no drift: the verdict stands until the next reconciliation resets
the instance (DESIGN.md section 5). Were it overwritten with "inactive", the
next task would repeat the very step that failed, under the same operation id.
Only "the instance is gone" (initial) replaces it."""

from __future__ import annotations

import logging

from monitor.inventory import Watched
from monitor.probe import Observation
from orchestration.model.lifecycle import ACTIVE, FAILURE, INACTIVE, INITIAL, state_name
from orchestration.store.events import EventRecorder, new_event
from orchestration.store.repository import Repository
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import Aborted, NotFound

log = logging.getLogger("monitor.drift")

# Compare-and-set attempts when only other fields of the record changed.
_ATTEMPTS = 3


def is_drift(stored: int, observed: int) -> bool:
    """True when the observed state should replace the stored one (see the module docstring)."""
    if stored == FAILURE and observed in (INACTIVE, ACTIVE):
        return False
    return (stored or INITIAL) != observed


def effective_state(stored: int, observed: int) -> int:
    """The state the engine should plan from, once drift is corrected."""
    return observed if is_drift(stored, observed) else (stored or INITIAL)


async def correct(repo: Repository, recorder: EventRecorder, watched: Watched, observed: Observation) -> bool:
    """Store the observed state and record a drift event; False when nothing was written."""
    r = watched.record
    seen = r.instance.state
    instance, revision = r.instance, r.revision
    for _ in range(_ATTEMPTS):
        if instance.state != seen or not is_drift(instance.state, observed.state):
            return False
        updated = pb.Instance()
        updated.CopyFrom(instance)
        updated.state = observed.state
        # `error` says why an instance is in failure; the controller's word replaces the engine's.
        updated.error = f"controller {observed.controller} reports the instance in failure" if observed.state == FAILURE else ""
        # The controller's word changed: a permanent verdict no longer holds.
        updated.permanent = False
        try:
            await repo.solutions.put_instance(watched.domain, watched.solution, r.element, r.cluster, updated, revision)
            break
        except Aborted:
            try:
                fresh = await repo.solutions.get_instance(watched.domain, watched.solution, r.element, r.cluster, watched.uuid)
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
    log.info("drift in %s/%s: %s", watched.domain, watched.solution, comment,
             extra={"instance": watched.uuid, "solution": watched.solution})
    task = pb.Task(
        type=pb.TASK_TYPE_INSTANCE, domain=watched.domain, solution=watched.solution, element=r.element,
        cluster=r.cluster, instance=watched.uuid, state=observed.state,
    )
    await recorder.record(new_event(task, pb.EVENT_TYPE_DRIFT, comment), task, state=observed.state)
    return True
