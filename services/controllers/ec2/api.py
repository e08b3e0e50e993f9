"""The EC2 API as the controller calls it: one boto3 client (blocking, so
each call runs in a thread), at most `concurrency` calls at once, each call a
span of its own (a child of the operation's span), botocore's time-outs and
retries from the settings, and every failure turned into the SDK's
Retryable or Permanent with the AWS error code kept. Credentials come from
the controller's environment (boto3's usual chain) or from the credentials
file its settings name; they never reach a message, a log line or a span."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import boto3
import botocore.configloader
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, NoCredentialsError, PartialCredentialsError
from opentelemetry.trace import SpanKind

from controllers.ec2.settings import ClientSettings
from orchestration_sdk import Permanent, Retryable
from orchestration_sdk.runtime import telemetry
from orchestration_sdk.runtime.backoff import Backoff, Jitter

log = logging.getLogger("controllers.ec2")
_tracer = telemetry.tracer("controllers.ec2")
T = TypeVar("T")

# Error codes a later attempt may get past: throttling, capacity, AWS-side
# trouble, eventual consistency right after a change, and the controller's
# own credentials or permissions (the operator fixes those, not the model).
RETRYABLE_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled", "InternalError",
    "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout", "RequestExpired",
    "InsufficientInstanceCapacity", "InsufficientAddressCapacity", "InstanceLimitExceeded",
    "DependencyViolation", "IncorrectInstanceState", "IncorrectState", "InvalidInstanceID.NotFound",
    "AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch", "OptInRequired",
})
# How waiting on a real state polls: from a quarter second, growing to the settings' poll_max.
_POLL_FIRST = 0.25
# A wait, or a call, gives up this long before the operation's deadline, to say why itself.
_MARGIN = 1.0
# The deadline of the operation a call belongs to (set by the controller for each operation).
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("ec2_deadline", default=None)


class Ec2Retryable(Retryable):
    """A failed EC2 call that a later attempt may get past."""

    def __init__(self, message: str, code: str, after: float | None = None) -> None:
        super().__init__(message, after)
        self.code = code


class Ec2Permanent(Permanent):
    """A failed EC2 call that no retry fixes (the model asks for something EC2 refuses)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


ApiError = (Ec2Retryable, Ec2Permanent)


class DryRunOk(Exception):
    """A DryRun call that would have succeeded."""


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    """A resource's tags as a map."""
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


class Ec2Api:
    """One region's EC2, called from asyncio."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)
        # Threads of its own, as many as calls may be in flight (asyncio's default pool has cores + 4).
        self._pool: ThreadPoolExecutor | None = None
        self._client: Any = None
        # Calls whose thread still runs, by uuid: an attempt cancelled at its deadline leaves its call running
        # (a thread cannot be stopped); the next attempt of that instance waits for them before it reads.
        self._running: dict[str, set[concurrent.futures.Future[Any]]] = {}
        self._poll = Backoff(first=_POLL_FIRST, maximum=max(_POLL_FIRST, settings.poll_max), factor=1.6,
                             jitter=Jitter.HALF)

    def open(self) -> None:
        """Make the client (no call yet: a missing credential shows on the first operation). Blocking
        (botocore loads its service model, about half a second): the controller runs it in a thread."""
        s = self.settings
        config = Config(region_name=s.region, connect_timeout=s.connect_timeout, read_timeout=s.call_timeout,
                        retries={"max_attempts": s.max_attempts, "mode": "standard"},
                        max_pool_connections=max(10, s.concurrency))
        session = boto3.Session(**self._credentials()) if s.credentials_file else \
            boto3.Session(profile_name=s.profile or None)
        self._client = session.client("ec2", endpoint_url=s.endpoint_url or None, config=config)
        self._pool = ThreadPoolExecutor(max_workers=s.concurrency, thread_name_prefix="ec2-call")
        # botocore's debug lines carry signed request headers: never below INFO.
        for name in ("botocore", "boto3", "urllib3"):
            logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))
        log.info("ec2: region %s%s, %d calls at once, %.0f s per call, %d attempts", s.region,
                 f", endpoint {s.endpoint_url}" if s.endpoint_url else "", s.concurrency, s.call_timeout, s.max_attempts)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _credentials(self) -> dict[str, str]:
        """The keys of one profile of the credentials file the settings name (default: `default`)."""
        path, profile = self.settings.credentials_file, self.settings.profile or "default"
        try:
            profiles = botocore.configloader.raw_config_parse(path)
        except BotoCoreError as err:
            raise ValueError(f"cannot read the credentials file {path}: {type(err).__name__}") from None
        keys = profiles.get(profile) or {}
        if not keys.get("aws_access_key_id") or not keys.get("aws_secret_access_key"):
            raise ValueError(f"the credentials file {path} has no profile [{profile}] with aws_access_key_id "
                             "and aws_secret_access_key")
        found = {"aws_access_key_id": keys["aws_access_key_id"], "aws_secret_access_key": keys["aws_secret_access_key"],
                 "region_name": self.settings.region}
        if keys.get("aws_session_token"):
            found["aws_session_token"] = keys["aws_session_token"]
        return found

    @contextmanager
    def deadline(self, deadline: float) -> Iterator[None]:
        """The calls made inside (in this task and the tasks it starts) end by `deadline` less a margin."""
        token = _deadline.set(deadline)
        try:
            yield
        finally:
            _deadline.reset(token)

    async def settle(self, uuid: str, deadline: float) -> None:
        """Wait until the calls of an earlier attempt for `uuid` that still run in their threads have
        ended (at most until `deadline` less a margin): what they did is then there to be read."""
        running = [asyncio.wrap_future(f) for f in self._running.get(uuid, ())]
        if running:
            log.info("ec2: %s: waiting for %d call(s) of an earlier attempt to end", uuid, len(running))
            await asyncio.wait(running, timeout=max(0.0, deadline - time.time() - _MARGIN))

    async def _run(self, uuid: str, operation: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """`call` in a thread of the pool, given up at the operation's deadline (its thread runs on, tracked)."""
        assert self._pool is not None, "Ec2Api.open first"
        loop = asyncio.get_running_loop()
        future = self._pool.submit(call)
        if uuid:
            self._running.setdefault(uuid, set()).add(future)
            future.add_done_callback(lambda done: self._ended(loop, uuid, done))
        answer = asyncio.wrap_future(future)
        answer.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved, even if given up
        deadline = _deadline.get()
        timeout = None if deadline is None else max(0.0, deadline - time.time() - _MARGIN)
        try:
            return await asyncio.wait_for(asyncio.shield(answer), timeout)
        except TimeoutError:
            raise Ec2Retryable(f"EC2 {operation}: no answer before the operation's deadline; the next attempt "
                               "looks at what it did", "DeadlineExceeded", after=1.0) from None

    def _ended(self, loop: asyncio.AbstractEventLoop, uuid: str, future: concurrent.futures.Future[Any]) -> None:
        """(In the call's thread) forget the ended call, on the event loop's thread."""
        def forget() -> None:
            running = self._running.get(uuid)
            if running is not None:
                running.discard(future)
                if not running:
                    self._running.pop(uuid, None)
        try:
            loop.call_soon_threadsafe(forget)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    async def call(self, operation: str, uuid: str = "", **params: Any) -> dict[str, Any]:
        """One EC2 API call (`RunInstances`, ...) as a span of its own, ended by the
        operation's deadline; raises Ec2Retryable or Ec2Permanent, or DryRunOk for a
        DryRun that would succeed."""
        method = getattr(self._client, _snake(operation))
        attributes = {"rpc.system": "aws-api", "rpc.service": "EC2", "rpc.method": operation,
                      "aws.region": self.settings.region}
        if uuid:
            attributes["orch.instance"] = uuid
        with _tracer.start_as_current_span(f"EC2.{operation}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            try:
                async with self._slots:
                    return await self._run(uuid, operation, functools.partial(method, **params))
            except ClientError as err:
                error = err.response.get("Error", {})
                code, text = str(error.get("Code", "")), str(error.get("Message", ""))
                if code == "DryRunOperation":
                    raise DryRunOk() from None
                status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                telemetry.fail(span, code)
                message = f"EC2 {operation}: {code}: {text}"
                if code in RETRYABLE_CODES or status >= 500:
                    raise Ec2Retryable(message, code) from None
                raise Ec2Permanent(message, code) from None
            except (NoCredentialsError, PartialCredentialsError) as err:
                telemetry.fail(span, type(err).__name__)
                raise Ec2Retryable("ec2: no AWS credentials: give the controller AWS_ACCESS_KEY_ID and "
                                   "AWS_SECRET_ACCESS_KEY in its environment, or --credentials-file",
                                   type(err).__name__, after=30.0) from None
            except Ec2Retryable as err:
                telemetry.fail(span, err.code)
                raise
            except (ConnectionError, BotoCoreError) as err:
                telemetry.fail(span, type(err).__name__)
                raise Ec2Retryable(f"EC2 {operation}: {type(err).__name__}: {err}", type(err).__name__) from None

    async def describe(self, operation: str, key: str, uuid: str = "", **params: Any) -> list[dict[str, Any]]:
        """Every item of a Describe* call (all pages): `key` names the list in its answer."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.call(operation, uuid, **params, **({"NextToken": token} if token else {}))
            items += page.get(key) or []
            token = page.get("NextToken")
            if not token:
                return items

    async def instances(self, filters: list[dict[str, Any]], uuid: str = "") -> list[dict[str, Any]]:
        """The instances the filters select, oldest launch first."""
        reservations = await self.describe("DescribeInstances", "Reservations", uuid, Filters=filters)
        found = [i for r in reservations for i in r.get("Instances") or []]
        return sorted(found, key=lambda i: (str(i.get("LaunchTime", "")), i["InstanceId"]))

    async def wait(self, read: Callable[[], Awaitable[T]], done: Callable[[T], bool], deadline: float,
                   what: str) -> T:
        """Poll `read` with the SDK's back-off until `done`; Retryable when the
        operation's deadline comes first (the next attempt waits on)."""
        failures = 0
        started = time.time()
        while True:
            value = await read()
            if done(value):
                return value
            failures += 1
            delay = self._poll.delay(failures)
            if time.time() + delay > deadline - _MARGIN:
                raise Retryable(f"{what}: not yet after {time.time() - started:.0f} s; the next attempt waits on",
                                after=1.0)
            await asyncio.sleep(delay)
