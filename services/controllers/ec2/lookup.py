"""Status lookups of many servers at once: the monitor asks the status of
every instance of a controller in one Status call, and the SDK runs them
concurrently; the lookups that start together share one DescribeInstances
per 200 uuids (EC2's limit of values in a filter) instead of one call each,
which EC2's request rate limits would soon refuse."""

from __future__ import annotations

import asyncio
from typing import Any

from controllers.ec2.api import Ec2Api
from controllers.ec2.settings import TAG_INSTANCE

LIVE = ["pending", "running", "stopping", "stopped", "shutting-down"]
FILTER_VALUES = 200


def live_owned(uuids: list[str]) -> list[dict[str, Any]]:
    """DescribeInstances filters of the live instances tagged for these engine instances."""
    return [{"Name": f"tag:{TAG_INSTANCE}", "Values": uuids}, {"Name": "instance-state-name", "Values": LIVE}]


def newest_live(instances: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The instance that stands for an engine instance: the newest one not on its way out."""
    live = [i for i in instances if i["State"]["Name"] in LIVE and i["State"]["Name"] != "shutting-down"]
    return live[-1] if live else None


class InstanceLookup:
    """Finds the live instance tagged for each uuid, coalescing concurrent lookups."""

    def __init__(self, api: Ec2Api) -> None:
        self.api = api
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._flush: asyncio.Task[None] | None = None
        self.calls = 0  # DescribeInstances calls made (for tests and figures)

    async def find(self, uuid: str) -> dict[str, Any] | None:
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
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
                found = await self.api.instances(live_owned(chunk))
            except Exception as err:  # noqa: BLE001 - every waiting lookup gets it
                for uuid in chunk:
                    for future in waiting[uuid]:
                        if not future.done():
                            future.set_exception(err)
                continue
            by_uuid: dict[str, list[dict[str, Any]]] = {}
            for instance in found:
                tag = next((t["Value"] for t in instance.get("Tags") or [] if t["Key"] == TAG_INSTANCE), "")
                by_uuid.setdefault(tag, []).append(instance)
            for uuid in chunk:
                answer = newest_live(by_uuid.get(uuid, []))
                for future in waiting[uuid]:
                    if not future.done():
                        future.set_result(answer)
