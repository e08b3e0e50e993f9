"""The monitor process: one poll per interval, each poll reading the records,
asking the controllers, publishing status, correcting drift and compensating;
a poll that fails (NATS or a controller away) is logged and the next one tries
again. SIGTERM/SIGINT stop it between or during polls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from monitor.compensation import Compensator, Pacing, SolutionKey, mark_degraded, rollback_for
from monitor.drift import correct, effective_state, is_drift
from monitor.figures import PollFigures
from monitor.inventory import Inventory, SolutionView, Watched
from monitor.probe import Observation, StatusProbe
from monitor.pruning import Pruner
from monitor.settings import MonitorSettings
from monitor.status import StatusBoard, hold_message
from orchestration.model.lifecycle import FAILURE, INITIAL, state_name
from orchestration.runtime.metrics import COMPENSATIONS, DRIFTS, POLL_SECONDS, POLLED
from orchestration.store.events import EventRecorder
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects
from orchestration.store.wire import connect, redact
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime import telemetry
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.runtime.process import stop_on_signals

_tracer = telemetry.tracer("monitor")
log = logging.getLogger("monitor")
# How often the tasks bucket's size is checked against its cap (one stream info).
RELIEF_SECONDS = 1.0

# Solutions acted on at once (drift corrections, compensations).
_SOLUTION_CONCURRENCY = 32


class _Tally:
    """Counters of one poll, turned into PollFigures at its end."""

    def __init__(self) -> None:
        self.drifted = 0
        self.deferred = 0
        self.compensations = 0
        self.held = 0
        self.degraded = 0


class Monitor:
    """A monitor replica: `connect`, then `run` until stopped, then `close`."""

    def __init__(self, settings: MonitorSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        self.clock = clock
        self.board = StatusBoard()
        self.backoff = Pacing(settings.interval, settings.backoff_max)
        self.last = PollFigures()
        self.polls = 0
        self._nc: NatsClient | None = None
        self._probe: StatusProbe | None = None

    async def connect(self) -> None:
        """Connect to NATS, bind the repository and answer figure requests."""
        nc = await connect(self.settings.nats_url, "monitor")
        try:
            js = nc.jetstream()
            self.repo = Repository(js, self.subjects)
            await self.repo.open()
            self.leases = self.repo.leases
            self.recorder = EventRecorder(js, self.subjects)
            self.compensator = Compensator(self.repo, self.leases, js, self.subjects)
            self.inventory = Inventory(self.repo)
            self.pruner = Pruner(self.repo, self.settings.tree_days, self.settings.prune_every, self.clock)
            await nc.subscribe(self.subjects.monitor_figures, cb=self._answer_figures)
        except BaseException:
            await nc.close()
            raise
        self._nc = nc
        self._probe = StatusProbe(self.repo.registrations, self.settings.credential, self.settings.batch_size,
                                  self.settings.status_timeout, self.settings.tls)
        log.info("polling every %.1f s, nats %s, prefix %s", self.settings.interval, redact(self.settings.nats_url),
                 self.settings.prefix)

    async def close(self) -> None:
        if self._probe is not None:
            await self._probe.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def _answer_figures(self, msg: Msg) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(self.last.to_json(self.polls))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll at the interval until `stop` is set; a failed poll is logged, not fatal.
        The tasks bucket is kept below its cap meanwhile, every RELIEF_SECONDS."""
        relief = asyncio.create_task(self._relieve(stop), name="relief")
        try:
            await self._poll_loop(stop)
        finally:
            relief.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relief

    async def _relieve(self, stop: asyncio.Event) -> None:
        """Keep the tasks bucket below its cap (Pruner.relieve), whatever the poll interval."""
        while not stop.is_set():
            try:
                await self.pruner.relieve()
            except Exception as err:  # noqa: BLE001 - NATS away: the next pass tries again
                log.warning("relieving the tasks bucket failed: %s: %s", type(err).__name__, err)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), RELIEF_SECONDS)

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = self.clock()
            try:
                with _tracer.start_as_current_span("monitor poll") as span:
                    self.last = await self.poll()
                    span.set_attribute("orch.instances", self.last.instances)
                    span.set_attribute("orch.drifted", self.last.drifted)
                self.polls += 1
                POLL_SECONDS.observe(self.last.duration_seconds)
                POLLED.set(self.last.instances)
                DRIFTS.inc(self.last.drifted)
                COMPENSATIONS.inc(self.last.compensations)
                log.info(self.last.log_line())
            except Exception as err:  # noqa: BLE001 - NATS or a controller away: the next poll tries again
                log.warning("poll failed: %s: %s", type(err).__name__, err)
                log.debug("poll failure", exc_info=True)
            try:
                await self.pruner.maybe_prune()
            except Exception as err:  # noqa: BLE001 - the next pass tries again
                log.warning("pruning failed: %s: %s", type(err).__name__, err)
            wait = max(0.0, self.settings.interval - (self.clock() - started))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def poll(self) -> PollFigures:
        """One poll; see the module docstring."""
        assert self._nc is not None and self._probe is not None, "connect() first"
        started, time_ns = self.clock(), time.time_ns()
        # A solution with a task running is its dispatcher's: it is neither
        # read nor asked about (at scale, polls during a long deploy would
        # cost as much as the deploy).
        busy_before = await self._busy()
        views = await self.inventory.read(skip=lambda domain, name: (domain, name) in busy_before)
        await self._probe.refresh()
        by_controller: dict[str, list[Watched]] = defaultdict(list)
        for view in views:
            for watched in view.instances:
                by_controller[watched.controller].append(watched)
        answers = await asyncio.gather(
            *(self._probe.ask(name, group) for name, group in by_controller.items())
        )
        observed: dict[str, Observation] = {}
        for answer in answers:
            observed.update(answer.observed)
        # Leases again: a task that started while we read and asked owns its
        # solution now (no status for it; its drift is left to the task).
        busy = busy_before | await self._busy()
        quiet = [v for v in views if (v.domain, v.name) not in busy]
        for message in self.board.messages(quiet, observed, time_ns):
            await self._nc.publish(self.subjects.status(message.domain, message.solution), message.encode())
        await self._nc.flush()
        tally = _Tally()
        # A paused solution is left as it is (drift is still written down).
        paused = set(await self.repo.pauses.all())
        await gather_bounded(
            (self._act(v, observed, view_busy=(v.domain, v.name) in busy, tally=tally,
                       paused=(v.domain, v.name) in paused) for v in views),
            _SOLUTION_CONCURRENCY,
        )
        # Pacing is kept for the busy ones too: a compensation's own run must not reset its count.
        self.backoff.forget_except({(v.domain, v.name) for v in views} | busy)
        return PollFigures(
            time=time_ns, solutions=len(quiet), busy=len(busy), read=self.inventory.read_count, instances=len(observed),
            unanswered=sum(a.unanswered for a in answers), drifted=tally.drifted, drift_deferred=tally.deferred,
            compensations=tally.compensations, held=tally.held, degraded=tally.degraded, controller_calls=sum(a.calls for a in answers),
            duration_seconds=round(self.clock() - started, 6),
        )

    async def _busy(self) -> set[SolutionKey]:
        """The solutions with a task running (holding a lease)."""
        return {(lease.record.request.domain, lease.record.request.solution) for lease in await self.leases.all()}

    async def _act(self, view: SolutionView, observed: dict[str, Observation], view_busy: bool, tally: _Tally,
                   paused: bool = False) -> None:
        """Correct drift, then compensate, unless a task runs for the solution."""
        drifting = [
            (w, observed[w.uuid]) for w in view.instances
            if w.uuid in observed and is_drift(w.record.instance.state, observed[w.uuid].state)
        ]
        if view_busy or (drifting and await self.leases.get(view.domain, view.name) is not None):
            # The running task owns the records; it will see the real state itself.
            tally.deferred += len(drifting)
            return
        if drifting:
            written = await gather_bounded(correct(self.repo, self.recorder, w, o) for w, o in drifting)
            tally.drifted += sum(written)
            if not all(written):
                return  # records changed under us: look again next poll
        if view.header.hold.kind or paused:
            # Held (an operator terminated its task), degraded or paused: drift
            # is reported above, nothing is compensated until a request comes.
            tally.held += 1
            self.backoff.converged((view.domain, view.name))
            return
        await self._compensate(view, observed, tally)

    async def _compensate(self, view: SolutionView, observed: dict[str, Observation], tally: _Tally) -> None:
        key = (view.domain, view.name)
        off = [
            w for w in view.instances
            if w.uuid in observed and effective_state(w.record.instance.state, observed[w.uuid].state) != w.record.instance.target
        ]
        if not off:
            if all(w.uuid in observed for w in view.instances):
                self.backoff.converged(key)
            return
        if not self.backoff.allowed(key, self.clock()):
            return
        # Re-read before acting: the records (now corrected) decide, not this poll's snapshot.
        fresh = await self.repo.solutions.list_instances(view.domain, view.name)
        off_now = [r for r in fresh if r.instance.target and (r.instance.state or INITIAL) != r.instance.target]
        if not off_now:
            return
        first = off_now[0].instance
        reason = (f"{len(off_now)} instance(s) off target, e.g. {first.uuid} "
                  f"{_name(first.state)} (target {_name(first.target)})")
        failing = [r for r in off_now if r.instance.state == FAILURE]
        if failing and view.header.on_failure == pb.FAILURE_POLICY_ROLLBACK:
            found = rollback_for([v.value for v in await self.repo.revisions.all(view.domain, view.name)],
                                 int(time.time() * 1000))
            if found is not None:
                r = failing[0]
                why = f"instance {r.instance.uuid} of {r.element}/{r.cluster} failed: {r.instance.error or 'failure'}"
                if await self.compensator.roll_back(view.domain, view.name, *found, why) is not None:
                    tally.compensations += 1
                    self.backoff.compensated(key, self.clock())
                return
        permanent = [r for r in off_now if r.instance.state == FAILURE and r.instance.permanent]
        if permanent:
            r = permanent[0]
            await self._degrade(view, f"instance {r.instance.uuid} of {r.element}/{r.cluster} failed permanently: "
                                      f"{r.instance.error}", tally)
            return
        if self.backoff.streak(key) >= self.settings.max_compensations:
            failed = next((r.instance for r in off_now if r.instance.error), first)
            last = f"; last error: {failed.error}" if failed.error else ""
            await self._degrade(view, f"{self.backoff.streak(key)} compensation(s) did not converge it: {reason}{last}", tally)
            return
        if await self.compensator.submit(view.domain, view.name, reason) is not None:
            tally.compensations += 1
            wait = self.backoff.compensated(key, self.clock())
            log.debug("next compensation of %s/%s not before %.0f s", view.domain, view.name, wait)


    async def _degrade(self, view: SolutionView, reason: str, tally: _Tally) -> None:
        hold = await mark_degraded(self.repo, self.leases, self.recorder, view.domain, view.name, reason)
        if hold is None:
            return
        tally.degraded += 1
        self.backoff.converged((view.domain, view.name))
        assert self._nc is not None
        message = hold_message(view, hold, time.time_ns())
        await self._nc.publish(self.subjects.status(view.domain, view.name), message.encode())


def _name(state: int) -> str:
    return state_name(state) or "initial"


async def serve(settings: MonitorSettings) -> None:
    """Run a monitor until SIGTERM or SIGINT."""
    stop = stop_on_signals()
    monitor = Monitor(settings)
    try:
        while not stop.is_set():
            try:
                await monitor.connect()
                break
            except Exception as err:  # noqa: BLE001 - NATS not there yet: try again
                log.warning("cannot connect to NATS yet: %s: %s", type(err).__name__, err)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.interval)
        await monitor.run(stop)
    finally:
        log.info("stopping")
        await monitor.close()
