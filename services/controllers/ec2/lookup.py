"""Status lookups of many instances at once: the monitor asks the status of
every instance of a controller in one Status call, and the SDK runs them
concurrently; the lookups that start together share their Describe calls
(one per 200 uuids, EC2's limit of values in a filter) instead of making
them once each, which EC2's request rate limits would soon refuse. Servers
share one DescribeInstances, networks one DescribeVpcs, DescribeSubnets and
DescribeSecurityGroups."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from controllers.ec2.api import Ec2Api, tags_of
from controllers.ec2.settings import TAG_INSTANCE

LIVE = ["pending", "running", "stopping", "stopped", "shutting-down"]
FILTER_VALUES = 200
T = TypeVar("T")


def live_owned(uuids: list[str]) -> list[dict[str, Any]]:
    """DescribeInstances filters of the live instances tagged for these engine instances."""
    return [{"Name": f"tag:{TAG_INSTANCE}", "Values": uuids}, {"Name": "instance-state-name", "Values": LIVE}]


def newest_live(instances: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The instance that stands for an engine instance: the newest one not on its way out."""
    live = [i for i in instances if i["State"]["Name"] in LIVE and i["State"]["Name"] != "shutting-down"]
    return live[-1] if live else None


def by_owner(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Describe* items by their orch:instance tag."""
    found: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        found.setdefault(tags_of(item).get(TAG_INSTANCE, ""), []).append(item)
    return found


class Coalescing(Generic[T]):
    """Answers lookups by uuid; the lookups of one moment share one `fetch` per 200 uuids."""

    def __init__(self, fetch: Callable[[list[str]], Awaitable[dict[str, T]]], missing: T) -> None:
        self._fetch, self._missing = fetch, missing
        self._waiting: dict[str, list[asyncio.Future[T]]] = {}
        self._flush: asyncio.Task[None] | None = None
        self.calls = 0  # fetches made (for tests and figures)

    async def find(self, uuid: str) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(uuid, []).append(future)
        if self._flush is None:
            self._flush = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        await asyncio.sleep(0)  # the other lookups of this moment join
        waiting, self._waiting, self._flush = self._waiting, {}, None
        uuids = list(waiting)
        for start in range(0, len(uuids), FILTER_VALUES):
            chunk = uuids[start:start + FILTER_VALUES]
            try:
                self.calls += 1
                found = await self._fetch(chunk)
            except Exception as err:  # noqa: BLE001 - every waiting lookup gets it
                for uuid in chunk:
                    for future in waiting[uuid]:
                        if not future.done():
                            future.set_exception(err)
                continue
            for uuid in chunk:
                for future in waiting[uuid]:
                    if not future.done():
                        future.set_result(found.get(uuid, self._missing))


class InstanceLookup(Coalescing[dict[str, Any] | None]):
    """Finds the live instance tagged for each uuid, coalescing concurrent lookups."""

    def __init__(self, api: Ec2Api) -> None:
        async def fetch(chunk: list[str]) -> dict[str, dict[str, Any] | None]:
            owners = by_owner(await api.instances(live_owned(chunk)))
            return {uuid: newest_live(owners.get(uuid, [])) for uuid in chunk}

        super().__init__(fetch, None)
