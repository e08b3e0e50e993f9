"""Init container of the gateway, dispatcher and monitor pods (Helm chart).

Waits until NATS JetStream answers, creates every stream and KV bucket of the
suite with the services' own configuration (Repository.open: idempotent, safe
to run in several pods at once), then raises each one's replica count to
ORCH_JETSTREAM_REPLICAS so that losing a NATS server loses nothing. The
services bind to what exists, so they run on the replicated streams.

Environment: ORCH_NATS_URL, ORCH_PREFIX, ORCH_JETSTREAM_REPLICAS.
"""

import asyncio
import os
import sys

import nats
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects

DEADLINE = 600.0


async def prepare(url: str, subjects: Subjects, replicas: int) -> None:
    nc = await nats.connect(servers=[url], connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream(timeout=10)
        await Repository(js, subjects).open()
        for stream in subjects.repository_streams:
            config = (await js.stream_info(stream)).config
            if (config.num_replicas or 1) < replicas:
                config.num_replicas = replicas
                await js.update_stream(config)
                print(f"jetstream-init: {stream}: {replicas} replicas", flush=True)
    finally:
        await nc.close()


async def main() -> int:
    url, replicas = os.environ["ORCH_NATS_URL"], int(os.environ.get("ORCH_JETSTREAM_REPLICAS", "3"))
    subjects = Subjects(os.environ.get("ORCH_PREFIX", "orch"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        try:
            await prepare(url, subjects, replicas)
            print("jetstream-init: streams and buckets ready", flush=True)
            return 0
        except Exception as err:  # NATS starting, JetStream electing its leader: try again
            if loop.time() > deadline:
                print(f"jetstream-init: giving up: {err!r}", file=sys.stderr, flush=True)
                return 1
            print(f"jetstream-init: waiting for NATS JetStream: {err!r}", file=sys.stderr, flush=True)
            await asyncio.sleep(3)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
