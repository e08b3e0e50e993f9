"""AutomationService: the read side of tasks and events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from gateway.api.access import caller
from gateway.api.feeds import Feeds
from orchestration.model.lifecycle import TASK_ENDED
from orchestration.model.names import check_name, check_reason
from orchestration.store.repository import Repository
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import FailedPrecondition, InvalidArgument, NotFound

# The most messages of the events stream a `latest` read looks at.
MAX_LATEST = 10_000


class AutomationServicer(gw_grpc.AutomationServiceServicer):
    def __init__(self, repo: Repository, feeds: Feeds) -> None:
        self.repo = repo
        self.feeds = feeds
        self.leases = repo.leases

    async def WatchEvents(self, request: gw.WatchEventsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[gw.WatchEventsResponse]:
        if request.domain:
            check_name(request.domain, "domain")
            await self.repo.model.require_domain(request.domain)
        if request.task:
            check_name(request.task, "task")
        async for item in self.feeds.events(request.domain, request.task):
            yield item

    async def TerminateTask(self, request: gw.TerminateTaskRequest, context: grpc.aio.ServicerContext) -> gw.TerminateTaskResponse:
        domain = await self._domain_of(request.domain, request.task)
        task = await self.repo.tasks.find_task(domain, request.task)
        if task.status in TASK_ENDED:
            status = pb.TaskStatus.Name(task.status).removeprefix("TASK_STATUS_").lower()
            raise FailedPrecondition(f"task {task.uuid} has already ended ({status}); nothing to terminate")
        root = task
        while root.parent:
            root = await self.repo.tasks.find_task(domain, root.parent)
        await self.leases.request_termination(domain, root.uuid, task.uuid, caller().name, check_reason(request.reason))
        return gw.TerminateTaskResponse()

    async def ListTasks(self, request: gw.ListTasksRequest, context: grpc.aio.ServicerContext) -> gw.ListTasksResponse:
        check_name(request.domain, "domain")
        await self.repo.model.require_domain(request.domain)
        tasks = await self.repo.tasks.list_tasks(request.domain, solution=request.solution, request=request.request,
                                                 roots_only=request.roots_only)
        return gw.ListTasksResponse(tasks=tasks)

    async def _domain_of(self, domain: str, task: str) -> str:
        """The task's domain: the given one, or the one domain that holds it."""
        check_name(task, "task")
        if domain:
            return check_name(domain, "domain")
        for candidate in await self.repo.model.list_domains():
            try:
                await self.repo.tasks.find_task(candidate, task)
                return candidate
            except NotFound:
                continue
        raise NotFound(f"task '{task}' not found in any domain")

    async def RetrieveTask(self, request: gw.RetrieveTaskRequest, context: grpc.aio.ServicerContext) -> gw.RetrieveTaskResponse:
        domain = await self._domain_of(request.domain, request.task)
        if request.tree:
            tree = await self.repo.tasks.get_task_tree(domain, request.task)
            return gw.RetrieveTaskResponse(task=tree[0], subtasks=tree[1:])
        return gw.RetrieveTaskResponse(task=await self.repo.tasks.find_task(domain, request.task))

    async def ListEvents(self, request: gw.ListEventsRequest, context: grpc.aio.ServicerContext) -> gw.ListEventsResponse:
        check_name(request.domain, "domain")
        await self.repo.model.require_domain(request.domain)
        if request.task:
            check_name(request.task, "task")
        if request.latest < 0 or request.latest > MAX_LATEST:
            raise InvalidArgument(f"latest: {request.latest} is not between 0 and {MAX_LATEST}")
        if request.latest and not request.task:
            return gw.ListEventsResponse(events=await self.feeds.latest(request.domain, request.latest))
        return gw.ListEventsResponse(events=await self.repo.tasks.list_events(request.domain, task=request.task))

    async def RetrieveEvent(self, request: gw.RetrieveEventRequest, context: grpc.aio.ServicerContext) -> gw.RetrieveEventResponse:
        check_name(request.domain, "domain")
        check_name(request.event, "event")
        if request.task:
            check_name(request.task, "task")
        return gw.RetrieveEventResponse(event=await self.repo.tasks.get_event(request.domain, request.event, task=request.task))
