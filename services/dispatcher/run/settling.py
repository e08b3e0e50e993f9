"""Settling and the roll-up of a run: a cluster with no work left has its
stale members reconfigured or its tasks completed; at the end every task is
closed and the states of clusters, elements and the solution are rolled up
from their instances (what was torn down is deleted)."""

from __future__ import annotations

import contextlib
import functools

from dispatcher.run.scheduler import Scheduler
from dispatcher.run.state import ClusterSlot, InstanceSlot, SolutionState
from dispatcher.run.tasks import TaskBook
from orchestration.model.lifecycle import ACTIVE
from orchestration.model.rollup import Tally
from orchestration.store.repository import Repository
from orchestration.v1 import model_pb2 as pb
from orchestration.v1.model_pb2 import Transition
from orchestration.v1.records_pb2 import Grave
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.status_errors import NotFound

S = pb.TaskStatus


def cluster_task(book: TaskBook, cluster: ClusterSlot) -> str:
    """A cluster's task (and its element's), made once per tree."""
    if not cluster.task:
        element, version = cluster.key
        element_task = book.ensure(book.root, pb.TASK_TYPE_ELEMENT, "element", element, element=element)
        cluster.task = book.ensure(element_task.uuid, pb.TASK_TYPE_CLUSTER, "cluster", element, version,
                                   element=element, cluster=version).uuid
    return cluster.task


def attach_task(book: TaskBook, slot: InstanceSlot, cluster: ClusterSlot) -> None:
    """Give an instance its task (and its cluster and element theirs), made once per tree."""
    slot.task = book.ensure(cluster_task(book, cluster), pb.TASK_TYPE_INSTANCE, "instance", slot.record.uuid,
                            lazy=True, element=slot.element, cluster=slot.cluster, instance=slot.record.uuid,
                            state=slot.record.target).uuid


class Settler:
    """Settles the clusters of one run and closes it."""

    def __init__(self, repo: Repository, book: TaskBook, state: SolutionState, scheduler: Scheduler,
                 domain: str, solution: str) -> None:
        self.repo, self.book, self.state, self.scheduler = repo, book, state, scheduler
        self.domain, self.solution = domain, solution

    async def cluster_settled(self, cluster: ClusterSlot) -> None:
        """A cluster with no work left: reconfigure siblings whose view is stale, or complete it."""
        # Two operations of a cluster may end together; only one settles it.
        if self.scheduler.stopping or cluster.busy or cluster.settling:
            return
        cluster.settling = True
        try:
            await self._settle(cluster)
        finally:
            cluster.settling = False

    async def instance_done(self, slot: InstanceSlot, cluster: ClusterSlot) -> None:
        """An instance whose work in this run is over completes its task at
        once, not when its cluster settles (the completions then spread over
        the run instead of all waiting for its end), unless a reconfigure may
        still come its way: a live active member of a cluster that uses its
        member list completes when its cluster settles (a later sibling's
        join makes its view stale, and the reconfigure that follows runs
        under its task)."""
        if not slot.task or self.scheduler.stopping or slot.task in self.scheduler.terminated:
            return
        member = slot.record.state == ACTIVE and not slot.record.remove
        if not member or cluster.ignores_siblings:
            self._arrived(slot.task)
            await self.book.set_status(slot.task, S.TASK_STATUS_COMPLETED)

    async def _settle(self, cluster: ClusterSlot) -> None:
        changed, cluster.membership_changed = cluster.membership_changed, False
        if changed and not cluster.ignores_siblings and await self._reconfigure_stale(cluster):
            return
        book = self.book
        if cluster.task and not book.finished(cluster.task):
            ending = [uuid for uuid in book.tasks[cluster.task].subtasks if uuid not in self.scheduler.terminated]
            for uuid in ending:
                self._arrived(uuid)
            await gather_bounded(book.set_status(uuid, S.TASK_STATUS_COMPLETED) for uuid in ending)
            await book.set_status(cluster.task, S.TASK_STATUS_COMPLETED)
            element_task = book.tasks[cluster.task].parent
            if all(book.finished(u) for u in book.tasks[element_task].subtasks):
                await book.set_status(element_task, S.TASK_STATUS_COMPLETED)

    def _arrived(self, uuid: str) -> None:
        """An instance task about to complete says the state its instance
        reached (its record says the state its last transition began in),
        so that its completion event does too."""
        task = self.book.tasks[uuid]
        slot = self.state.instances.get(task.instance)
        if slot is not None and not self.book.finished(uuid):
            task.state = slot.record.state or task.state

    async def _reconfigure_stale(self, cluster: ClusterSlot) -> bool:
        """Members told of other siblings than the cluster has now get a
        reconfigure; False when every member is up to date."""
        current = self.state.membership(cluster)
        stale = [
            slot for slot in (self.state.instances[u] for u in cluster.members)
            if slot.record.state == ACTIVE and not slot.record.remove and slot.record.members != current
        ]
        if not stale:
            return False
        for slot in stale:
            if not slot.task:
                attach_task(self.book, slot, cluster)
            self.state.update(slot, functools.partial(slot.path.append, Transition.TRANSITION_RECONFIGURE))
        await self.book.persist()
        for slot in stale:
            self.scheduler.schedule(slot)
        return True

    async def close_tasks(self) -> None:
        """Every task still open ends: TIMEOUT or TERMINATED, with why the run stopped."""
        reason = self.scheduler.stopping
        final = self.scheduler.final_status
        status = final if final in (S.TASK_STATUS_TIMEOUT, S.TASK_STATUS_TERMINATED) else S.TASK_STATUS_TERMINATED
        for uuid in list(self.book.tasks):
            if uuid == self.book.root or self.book.finished(uuid):
                continue
            await self.book.set_status(uuid, status, error=reason or "not run")

    async def hold(self, hold: pb.SolutionHold) -> None:
        """Write the solution's hold (the roll-up re-reads the header, so it keeps it)."""
        header = await self.repo.solutions.get_solution_header(self.domain, self.solution)
        header.value.hold.CopyFrom(hold)
        await self.repo.solutions.put_solution_header(self.domain, header.value, header.revision)

    async def roll_up(self, delete_on_finish: bool) -> None:
        """Write cluster, element and solution states; delete what was removed
        (the whole solution when it was torn down completely)."""
        repo, domain, solution = self.repo, self.domain, self.solution
        by_element: dict[str, Tally] = {}
        for cluster in list(self.state.clusters.values()):
            tally = Tally()
            for uuid in cluster.members:
                record = self.state.instances[uuid].record
                tally.add(record.state, record.target)
            rolled = tally.state  # the one roll-up rule; no members left: initial
            if cluster.record.remove and not cluster.members:
                with contextlib.suppress(NotFound):
                    await repo.solutions.delete_cluster(domain, solution, cluster.element, cluster.record.version)
                continue
            endpoints = ",".join(self.state.endpoints(cluster))
            if cluster.record.state != rolled or cluster.record.endpoint != endpoints:
                cluster.record.state = rolled
                cluster.record.endpoint = endpoints
                cluster.revision = await repo.solutions.put_cluster(domain, solution, cluster.element, cluster.record, cluster.revision)
            by_element.setdefault(cluster.element, Tally()).merge(tally)
        for element in await repo.solutions.list_elements(domain, solution):
            found = by_element.get(element.value.name)
            if found is None:
                if element.value.remove:
                    await repo.solutions.delete_element(domain, solution, element.value.name, element.revision)
                continue
            rolled = found.state
            if element.value.state != rolled:
                element.value.state = rolled
                await repo.solutions.put_element(domain, solution, element.value, element.revision)
        header = await repo.solutions.get_solution_header(domain, solution)
        if delete_on_finish and not self.state.instances and self.scheduler.final_status == S.TASK_STATUS_COMPLETED:
            root = self.book.tasks[self.book.root]
            await repo.solutions.remove_solution(domain, solution, Grave(actor=root.actor, task=root.uuid))
            return
        whole = Tally()
        for found in by_element.values():
            whole.merge(found)
        rolled = whole.state
        if header.value.state != rolled:
            header.value.state = rolled
            await repo.solutions.put_solution_header(domain, header.value, header.revision)
