"""What a run stores around its first operation. So that a big deploy starts
at once, the first operation leaves after only its own records are written
(the solution's header, its cluster's, its instance's; of the task tree only
the tasks above it are made, none stored). Then come the intent's other
element and cluster records (Deferred), the rest of the task tree (made
then, stored in one go), the request's revision (waited for before the run
ends: its conclusion writes into it) and the root's executing status, and,
as the run makes the instances a request adds, stores of the cluster tasks
that list their instance tasks.

The rules that keep it safe after a crash at any moment: no instance record
and no operation of a cluster before the cluster's record is stored; no task
status before the tree above it, and no instance task's status before a store
lists it under its cluster (see TaskBook)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from dispatcher.run.snapshot import Deferred
from dispatcher.run.state import ClusterKey, ClusterSlot, SolutionState
from dispatcher.run.tasks import TaskBook
from orchestration.store.kvstore import persist
from orchestration.store.repository import Repository
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import Aborted, Fenced

# At most this long (seconds) the rest waits for the first operation to leave:
# an operation that waits for its controller to register holds nothing up.
FIRST_SEND_WAIT = 0.05


def _retrieved(write: asyncio.Future[Any]) -> None:
    """A write's error is raised where it is awaited; one never awaited (the run stopped first) is no error."""
    if not write.cancelled():
        write.exception()


class Opening:
    """The writes of one run around its first operation."""

    def __init__(self, repo: Repository, book: TaskBook, state: SolutionState, domain: str, solution: str,
                 lost: Callable[[], bool], complete_tree: Callable[[], None] = lambda: None) -> None:
        self.repo, self.book, self.state, self.domain, self.solution = repo, book, state, domain, solution
        self.lost = lost
        # Makes the tasks the first operation did not wait for (held until the tree is stored).
        self.complete_tree = complete_tree
        # The intent's records left to the run (see prepare), and their writes once started.
        self.deferred = Deferred()
        self._element_writes: dict[str, asyncio.Future[None]] = {}
        self._cluster_writes: dict[ClusterKey, asyncio.Future[None]] = {}
        # Storing the tree, then the root's status (see store_the_rest).
        self._tree: asyncio.Future[None] | None = None
        self._starting: asyncio.Future[None] | None = None
        # The latest store listing the instance tasks made so far (see list_made).
        self._listing: asyncio.Future[None] | None = None
        # Resolved once the run's first operation is written to a controller's stream.
        self.first_sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Records the request's revision (see dispatcher.run.intent), and that record being written.
        self.record_revision: Callable[[], Awaitable[Any]] | None = None
        self.recording: asyncio.Future[Any] | None = None

    @property
    def started(self) -> bool:
        """Whether the rest is being stored (store_the_rest was called)."""
        return self._tree is not None

    def sent_signal(self) -> asyncio.Future[None] | None:
        """The future an operation resolves once it is written to its stream, while none has been."""
        return None if self.first_sent.done() else self.first_sent

    async def first_operation_out(self) -> None:
        """Wait (bounded) until the first operation has left, then store the rest."""
        await asyncio.wait([self.first_sent], timeout=FIRST_SEND_WAIT)
        self.store_the_rest()

    def store_the_rest(self) -> asyncio.Future[None]:
        """Start storing, once, what waited for the first operation: the
        deferred records, the task tree (completed first), the request's
        revision, then the root's status. The tree's store in flight (status
        changes wait for it, see TaskBook.hold_tree)."""
        if self._tree is None:
            self._write_deferred()
            self.complete_tree()
            self._tree = asyncio.ensure_future(self.book.persist())
            self._tree.add_done_callback(_retrieved)
            if self.record_revision is not None:
                self.recording = asyncio.ensure_future(self.record_revision())
                self.recording.add_done_callback(_retrieved)
            if not self.book.finished(self.book.root):
                self._starting = asyncio.ensure_future(self.book.set_status(self.book.root, pb.TASK_STATUS_EXECUTING))
        return self._tree

    async def cluster_stored(self, key: ClusterKey) -> None:
        """Wait until the cluster's record is stored (raises what its write raised)."""
        if key in self.deferred.clusters:
            self._write_deferred()
        write = self._cluster_writes.get(key)
        if write is not None:
            await write

    def list_made(self) -> asyncio.Future[None]:
        """Store the tasks that list the instance tasks made so far, after
        the stores before it (an instance task's first status waits until its
        parent lists it in the store, see TaskBook.set_status)."""
        previous = self._listing or self._tree

        async def store() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            await self.book.persist()

        self._listing = asyncio.ensure_future(store())
        self._listing.add_done_callback(_retrieved)
        return self._listing

    async def stored(self, listing: bool) -> None:
        """Everything started is stored, the request's revision included
        (Fenced when a write was refused); `listing`: the instance tasks made
        are listed too. Nothing is written once the run has lost its solution."""
        if self.lost():
            return
        await self.store_the_rest()
        listed = self.list_made() if listing else None
        await asyncio.gather(*self._cluster_writes.values(), *self._element_writes.values(),
                             *([self.recording] if self.recording is not None else []))
        if listed is not None:
            await listed

    async def close(self) -> None:
        """At the run's end, however it ends: wait for every write started
        (errors were raised where they mattered); a run that lost its
        solution writes nothing more, and nothing waits for its tree."""
        await asyncio.gather(*self._cluster_writes.values(), *self._element_writes.values(),
                             *([self._listing] if self._listing is not None else []), return_exceptions=True)
        if self._tree is not None or not self.lost():
            await asyncio.wait([self.store_the_rest()])
        if self.recording is not None:
            await asyncio.wait([self.recording])
        if self.lost():
            self.book.release_tree()  # status changes still waiting for the tree write nothing
        if self._starting is not None:
            await self._starting

    def _write_deferred(self) -> None:
        """Write the deferred records, once: each element's, then its clusters'."""
        deferred, self.deferred = self.deferred, Deferred()
        repo, domain, solution = self.repo, self.domain, self.solution

        async def fenced(write: Callable[[], Awaitable[int]], what: str) -> int:
            try:
                return await persist(write, self.lost)
            except Aborted as err:  # unfenced (a server without fenced writes): someone wrote behind the owner's back
                raise Fenced(f"{what} changed behind this run ({err.message}); stopping") from err

        async def write_element(element: pb.Element, revision: int | None) -> None:
            await fenced(functools.partial(repo.solutions.put_element, domain, solution, element, revision),
                         f"element {element.name}")

        async def write_cluster(cluster: ClusterSlot, revision: int | None) -> None:
            element = self._element_writes.get(cluster.element)
            if element is not None:
                await element  # the element's record before the records under it
            cluster.revision = await fenced(functools.partial(
                repo.solutions.put_cluster, domain, solution, cluster.element, cluster.record, revision),
                f"cluster {cluster.element}/{cluster.record.version}")

        for name, (element, revision) in deferred.elements.items():
            self._element_writes[name] = asyncio.ensure_future(write_element(element, revision))
        for key, (_, revision) in deferred.clusters.items():
            self._cluster_writes[key] = asyncio.ensure_future(write_cluster(self.state.clusters[key], revision))
        writes: list[asyncio.Future[Any]] = [*self._element_writes.values(), *self._cluster_writes.values()]
        for write in writes:
            write.add_done_callback(_retrieved)
