"""``NodeAgent``: the node runtime (the kubelet analogue) — register, renew, report, re-register.

Decisions, each from how the kubelet keeps a Node alive:

- The heartbeat is the lease renewal (PUT lease), every ``interval`` ± 10 %. The status
  (phase, conditions, ``currentTasks``) is written only when it changes, after a
  (re-)registration and after an outage — never on a plain heartbeat. A status write renews
  the lease on the registry's side too, so it takes the place of that round's renewal.
- After an outage the status is written again: meanwhile the registry may have recorded
  ``Ready=Unknown``, and when the node comes back it sets ``Ready=True`` on its own, which
  would silently overwrite a node that had reported itself not ready.
- A failed call (unreachable, 5xx from every endpoint, anything unexpected) is retried with
  Kubernetes' node-status backoff, 0.2 s doubling to 7 s, as the ceilings of a full jitter
  (``client.backoff``): nodes that failed together at a registry's restart come back spread
  out, not in one burst per doubling. The node's own work never waits for the registry.
  The client makes one round over its endpoints per call (``retries=0``): the retry policy
  is the agent's alone, so ``failures`` and ``last_renewal`` say exactly what happened and
  ``stop()`` is not stuck behind a client's own retries.
- ``NotFoundError`` means the registry lost the node (an in-memory registry restarted, or it
  removed the node after its lease expired): register again after a jittered pause of at most
  0.2 s, doubling for each ``NotFound`` in a row, so a fleet that a restarted registry forgot
  at once does not re-register at once, and a registry that keeps forgetting is not hammered
  (tooz's members vanish silently until the application rejoins; ours rejoin by themselves).
- The first registration waits a jittered ``start_jitter`` (at most 1 s, and never more than
  one interval): a fleet powered on together reaches the registry spread out.
- Many agents on one host share one client, their renewals batched (``SharedClient``): one
  request carries the renewals that fall together, instead of one request per agent.
- One asyncio loop serves both kinds of program: ``async with NodeAgent(...)`` runs it as a
  task; ``start_in_thread()`` runs the same loop in a daemon thread of its own. The methods
  the node's code calls (``set_current_tasks``...) are thread-safe and never block: they
  record the wish and wake the loop, which writes it (or keeps it until the registry is back).

Time comes only through the seams (``sleep``, ``clock``, ``rng``), so tests drive the whole
state machine against a real server without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self

import pydantic

from node_registry.agent.build import PassportSource, build_passport
from node_registry.agent.resources import Detector, detect_resources
from node_registry.agent.timing import START_JITTER, backoff_delay, renewal_delay, start_delay
from node_registry.client import AsyncRegistryClient
from node_registry.client.objects import RegistryEntry
from node_registry.client.settings import ClientSettings
from node_registry.clock import Clock, SystemClock
from node_registry.config import load_settings
from node_registry.errors import ConfigError, FieldError, NotFoundError, ValidationError
from node_registry.passport import Capability, Condition, ConditionStatus, NodePassport, Phase
from node_registry.passport.versions import translate_pydantic_error

log = logging.getLogger("node_registry.agent")

READY = "Ready"
#: A stopping agent waits this long for its loop to deregister before giving up on it.
STOP_TIMEOUT = 30.0

Sleep = Callable[[float], Awaitable[None]]


class AgentClient(Protocol):
    """What the agent needs of a client; ``AsyncRegistryClient`` is one."""

    @property
    def endpoint(self) -> str: ...

    async def register(self, passport: NodePassport | Mapping[str, Any]) -> RegistryEntry: ...

    async def heartbeat(self, name: str) -> datetime: ...

    async def update_status(
        self,
        name: str,
        *,
        phase: Phase | str | None = None,
        conditions: Iterable[Condition | Mapping[str, Any]] | None = None,
        current_tasks: int | None = None,
    ) -> RegistryEntry: ...

    async def deregister(self, name: str) -> None: ...

    async def set_capabilities(
        self, name: str, capabilities: Iterable[Capability | Mapping[str, Any]]
    ) -> list[Capability]: ...


class AgentEventKind(StrEnum):
    """The agent's state changes, as the ``node-registry agent`` command prints them."""

    REGISTERED = "registered"
    REREGISTERED = "re-registered"
    FAILING = "failing"
    RECOVERED = "recovered"
    DEREGISTERED = "deregistered"
    DEREGISTRATION_FAILED = "deregistration failed"


@dataclass(frozen=True, slots=True)
class AgentEvent:
    kind: AgentEventKind
    message: str
    at: datetime

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


def _condition(
    type_: str,
    status: bool | str | ConditionStatus,
    reason: str | None,
    message: str | None,
) -> Condition:
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    doc = {"type": type_, "status": status, "reason": reason, "message": message}
    try:
        return Condition.model_validate({k: v for k, v in doc.items() if v is not None})
    except pydantic.ValidationError as exc:
        raise ValidationError(
            "invalid condition", translate_pydantic_error(exc, prefix="status.conditions")
        ) from None


class NodeAgent:
    """Keeps one node registered and alive in the registry for as long as it runs.

    ``source`` is a passport file (YAML/JSON), a document or a ``NodePassport``; detected
    resources fill what it leaves out (``detect=False``: none). Everything is validated here,
    before any I/O. ``interval`` defaults to ``heartbeat.interval_seconds`` of the settings
    (10 s, or ``NODE_REGISTRY_HEARTBEAT__INTERVAL_SECONDS``). ``start_jitter`` is the longest
    the first registration waits (drawn uniformly; default: 1 s, or the interval if shorter;
    0: at once).
    """

    def __init__(
        self,
        source: PassportSource,
        *,
        endpoints: str | Sequence[str] | None = None,
        token: str | None = None,
        interval: float | None = None,
        timeout: float = 5.0,
        detect: bool = True,
        start_jitter: float | None = None,
        on_event: Callable[[AgentEvent], None] | None = None,
        # Seams, None for production: tests pass a client, a fake sleep, a clock, a seeded
        # rng. A host running many agents on one loop passes them one SharedClient.
        client: AgentClient | None = None,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        detector: Detector = detect_resources,
    ) -> None:
        self._passport = build_passport(source, detected=detector() if detect else None)
        if interval is None:
            interval = load_settings().heartbeat.interval_seconds
        if not interval > 0:
            raise ConfigError(f"the heartbeat interval must be positive, not {interval!r}")
        self._interval = float(interval)
        if start_jitter is None:
            start_jitter = min(START_JITTER, self._interval)
        if not start_jitter >= 0:
            raise ConfigError(f"start_jitter must not be negative, not {start_jitter!r}")
        self._start_jitter = float(start_jitter)
        # Validated now (a ConfigError before any I/O); the client is built inside the loop.
        self._settings = ClientSettings.build(endpoints, token, timeout, 0, 0.2)
        self._client = client
        self._on_event = on_event
        self._sleep: Sleep = sleep or asyncio.sleep
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()

        # What the node wants the registry to know; guarded by _lock (any thread writes it).
        self._lock = threading.Lock()
        status = self._passport.status
        # The runtime owns Ready, as the kubelet does: it starts True whatever a file says.
        self._conditions: dict[str, Condition] = {
            READY: _condition(READY, True, "AgentReady", None)
        }
        for c in status.conditions:
            if c.type != READY:
                self._conditions[c.type] = _condition(c.type, c.status, c.reason, c.message)
        self._current_tasks = status.current_tasks
        self._wanted = 0  # bumped on every change the node asks for
        self._sent = 0  # the last change the registry has
        # The node's claims, changed at runtime (add_capability); sent without re-registering.
        self._capabilities: dict[str, Capability] = {
            c.name: c for c in self._passport.spec.capabilities
        }
        self._capabilities_wanted = 0
        self._capabilities_sent = 0

        # The loop's own state: read anywhere, written only on the loop.
        self._registered = False
        self._registrations = 0
        self._announce: AgentEventKind | None = None
        self._resend = False
        self._failures = 0
        self._not_found = 0
        self._last_renewal: datetime | None = None
        self._stopping = False

        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._claimed = False

    def __repr__(self) -> str:
        return f"NodeAgent({self.name!r}, endpoints={list(self._settings.endpoints)!r})"

    # -- what the node's code reads -----------------------------------------------------

    @property
    def passport(self) -> NodePassport:
        """The passport as built (file merged with detection), before the runtime's status."""
        return self._passport

    @property
    def name(self) -> str:
        return self._passport.metadata.name

    @property
    def node_id(self) -> str:
        return self._passport.node_id

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def registered(self) -> bool:
        """Whether the registry holds the node, as far as the agent last heard."""
        return self._registered

    @property
    def last_renewal(self) -> datetime | None:
        """When the registry last accepted a renewal (a registration and a status write count)."""
        return self._last_renewal

    @property
    def failures(self) -> int:
        """Consecutive failed calls; 0 while the registry answers."""
        return self._failures

    @property
    def current_tasks(self) -> int:
        return self._current_tasks

    @property
    def conditions(self) -> list[Condition]:
        """The conditions the node reports, ``Ready`` among them."""
        with self._lock:
            return list(self._conditions.values())

    # -- what the node's code calls (any thread; never blocks) ---------------------------

    def set_current_tasks(self, count: int) -> None:
        """Report how many tasks the node is working on."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValidationError(
                "invalid status",
                [FieldError("status.currentTasks", f"{count!r} is not an integer >= 0")],
            )
        with self._lock:
            if count == self._current_tasks:
                return
            self._current_tasks = count
            self._wanted += 1
        self._notify()

    def set_condition(
        self,
        type: str,  # Kubernetes' name for it; shadows the builtin only here
        status: bool | str | ConditionStatus,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """Report a condition (merged by type on the registry); unchanged ones are not sent."""
        condition = _condition(type, status, reason, message)
        with self._lock:
            if self._conditions.get(condition.type) == condition:
                return
            self._conditions[condition.type] = condition
            self._wanted += 1
        self._notify()

    @property
    def capabilities(self) -> list[Capability]:
        """What the node claims now (its passport's, changed by ``add_capability``...)."""
        with self._lock:
            return list(self._capabilities.values())

    def add_capability(
        self, name: str, version: str | None = None, params: Mapping[str, Any] | None = None
    ) -> None:
        """Claim a capability (or change one's version or params) at runtime, without
        re-registering: the registry's watchers see the node MODIFIED, and the verifier
        probes the new claim. Checked here (``ValidationError``), sent by the loop."""
        doc: dict[str, Any] = {"name": name, "params": dict(params or {})}
        if version is not None:
            doc["version"] = version
        try:
            capability = Capability.model_validate(doc)
        except pydantic.ValidationError as exc:
            raise ValidationError(
                "invalid capability", translate_pydantic_error(exc, prefix="spec.capabilities")
            ) from None
        with self._lock:
            if self._capabilities.get(name) == capability:
                return
            self._capabilities[name] = capability
            self._capabilities_wanted += 1
        self._notify()

    def remove_capability(self, name: str) -> bool:
        """Stop claiming ``name`` at runtime; whether the node claimed it."""
        with self._lock:
            if self._capabilities.pop(name, None) is None:
                return False
            self._capabilities_wanted += 1
        self._notify()
        return True

    def set_ready(self, ready: bool, reason: str | None = None, message: str | None = None) -> None:
        """``Ready``: whether the node takes new tasks (``only_healthy`` skips it when False)."""
        default = "AgentReady" if ready else "AgentNotReady"
        self.set_condition(READY, ready, reason or default, message)

    # -- asyncio programs ----------------------------------------------------------------

    async def start(self) -> None:
        """Run the agent as a task of the running loop; returns at once."""
        self._claim()
        self._bind_loop()
        self._task = asyncio.create_task(self._run(), name=f"node-agent-{self.name}")

    async def aclose(self) -> None:
        """Stop renewing and deregister; idempotent."""
        task = self._task
        if task is None:
            self._claimed = True  # stopped before it started: it never will
            return
        self._request_stop()
        # Shielded: a caller cancelled while it waits must not cut the deregistration short.
        await asyncio.shield(task)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- synchronous programs ------------------------------------------------------------

    def start_in_thread(self) -> None:
        """Run the agent's loop in a daemon thread of its own; returns once it runs."""
        self._claim()
        ready = threading.Event()

        async def main() -> None:
            self._bind_loop()
            ready.set()
            await self._run()

        def target() -> None:
            try:
                asyncio.run(main())
            finally:
                ready.set()  # never leave start_in_thread waiting on a loop that failed

        self._thread = threading.Thread(target=target, name=f"node-agent-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self, timeout: float | None = STOP_TIMEOUT) -> None:
        """Stop renewing, deregister, and wait for that (at most ``timeout``); idempotent.

        In an asyncio program use ``await agent.aclose()``; ``stop()`` works there only from
        another thread.
        """
        loop = self._loop
        if loop is None:
            self._claimed = True
            return
        thread = self._thread
        if thread is None:  # started with start(): the loop belongs to the program
            if _running_loop() is loop:
                raise RuntimeError("stop() would block the agent's own loop: await aclose()")
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout)
            return
        if thread is threading.current_thread():
            raise RuntimeError("stop() called from the agent's own thread")
        with contextlib.suppress(RuntimeError):  # the loop is already closed: stopped
            loop.call_soon_threadsafe(self._request_stop)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("%r did not stop within %ss; its thread is left to finish", self, timeout)

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """``with agent.running():`` — the agent's thread runs for the block."""
        self.start_in_thread()
        try:
            yield self
        finally:
            self.stop()

    # -- the loop ------------------------------------------------------------------------

    def _claim(self) -> None:
        if self._claimed:
            raise RuntimeError(f"{self!r} has already run; an agent runs once")
        self._claimed = True

    def _bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return  # not running yet: the loop sends the status when it registers
        if _running_loop() is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
                loop.call_soon_threadsafe(wake.set)

    def _request_stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    def _emit(self, kind: AgentEventKind, message: str) -> None:
        event = AgentEvent(kind, message, self._clock.now())
        level = logging.WARNING if kind is AgentEventKind.FAILING else logging.INFO
        log.log(level, "%s", event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("the on_event callback failed on %s", event)

    async def _run(self) -> None:
        client = self._client
        owned: AsyncRegistryClient | None = None
        if client is None:
            settings = self._settings
            owned = AsyncRegistryClient(
                settings.endpoints, token=settings.token, timeout=settings.timeout, retries=0
            )
            client = owned
        try:
            await self._pause(start_delay(self._start_jitter, self._rng))
            while not self._stopping:
                delay = await self._step(client)
                await self._pause(delay)
            await self._deregister(client)
        finally:
            if owned is not None:
                await owned.aclose()

    def _status_pending(self) -> bool:
        with self._lock:
            return (
                self._resend
                or self._sent < self._wanted
                or self._capabilities_sent < self._capabilities_wanted
            )

    def _capabilities_pending(self) -> bool:
        with self._lock:
            return self._capabilities_sent < self._capabilities_wanted

    async def _step(self, client: AgentClient) -> float:
        """One call to the registry (register, write status or renew); the pause after it."""
        renewing = self._registered
        try:
            if not self._registered:
                await self._register(client)
            elif self._capabilities_pending():
                await self._write_capabilities(client)
            elif self._status_pending():
                await self._write_status(client)
            else:
                await client.heartbeat(self.name)
        except NotFoundError:
            self._registered = False
            self._not_found += 1
            log.info("the registry does not know node %s: registering again", self.name)
            return backoff_delay(self._not_found, self._rng)
        except Exception as exc:
            # Anything at all: the loop must outlive every failure of the registry or network.
            self._failures += 1
            self._resend = self._registered
            delay = backoff_delay(self._failures, self._rng)
            if self._failures == 1:
                what = "renewal" if renewing else "registration"
                self._emit(
                    AgentEventKind.FAILING,
                    f"{what} of {self.name} failed ({type(exc).__name__}: {exc}); "
                    f"retrying with backoff from {delay:g}s",
                )
            else:
                log.debug("attempt %d for %s failed: %s", self._failures, self.name, exc)
            return delay
        self._last_renewal = self._clock.now()
        failed, self._failures, self._not_found = self._failures, 0, 0
        if self._announce is not None:
            kind, self._announce = self._announce, None
            self._emit(kind, f"{self.name} ({self.node_id}) is Running at {client.endpoint}")
        elif failed:
            self._emit(
                AgentEventKind.RECOVERED,
                f"{self.name} renewed at {client.endpoint} after {failed} failed attempts",
            )
        # A change asked for meanwhile is written now rather than one interval later.
        return 0.0 if self._status_pending() else renewal_delay(self._interval, self._rng)

    async def _register(self, client: AgentClient) -> None:
        doc = self._passport.to_dict()
        with self._lock:
            tasks = self._current_tasks
            # A (re-)registration carries the claims as they are now.
            claimed = self._capabilities_wanted
            doc["spec"]["capabilities"] = [
                c.model_dump(mode="json", by_alias=True, exclude_none=True)
                for c in self._capabilities.values()
            ]
        # Pending until the status write below says Running, as a kubelet's new Node.
        doc["status"] = {"phase": Phase.PENDING.value, "currentTasks": tasks}
        await client.register(doc)
        with self._lock:
            self._capabilities_sent = max(self._capabilities_sent, claimed)
        self._registered = True
        self._resend = True
        self._registrations += 1
        self._announce = (
            AgentEventKind.REGISTERED if self._registrations == 1 else AgentEventKind.REREGISTERED
        )
        await self._write_status(client)

    async def _write_status(self, client: AgentClient) -> None:
        with self._lock:
            generation = self._wanted
            conditions = list(self._conditions.values())
            tasks = self._current_tasks
        await client.update_status(
            self.name, phase=Phase.RUNNING, conditions=conditions, current_tasks=tasks
        )
        self._resend = False
        with self._lock:
            self._sent = max(self._sent, generation)

    async def _write_capabilities(self, client: AgentClient) -> None:
        with self._lock:
            generation = self._capabilities_wanted
            capabilities = list(self._capabilities.values())
        await client.set_capabilities(self.name, capabilities)
        with self._lock:
            self._capabilities_sent = max(self._capabilities_sent, generation)

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay``; wake early to stop, or to write a status change while healthy."""
        wake = self._wake
        if delay <= 0 or wake is None:
            return
        sleeper = asyncio.ensure_future(self._sleep(delay))
        try:
            while True:
                wake.clear()
                if self._stopping:
                    return
                if self._registered and not self._failures and self._status_pending():
                    return
                waker = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                if sleeper.done():
                    sleeper.result()  # a failing sleep (a test's) should not pass silently
                    return
                # Woken while backing off: changes wait for the registry; only stop cuts in.
        finally:
            if not sleeper.done():
                sleeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sleeper

    async def _deregister(self, client: AgentClient) -> None:
        # Only a registration the registry confirmed: after a failed (even timed-out) one
        # the lease, if the registry did take it, expires by itself.
        if not self._registered:
            return
        try:
            await client.deregister(self.name)
        except NotFoundError:
            pass  # already gone: the registry removed it or restarted
        except Exception as exc:
            self._emit(
                AgentEventKind.DEREGISTRATION_FAILED,
                f"{self.name} ({type(exc).__name__}: {exc}); its lease will expire instead",
            )
            return
        self._registered = False
        self._emit(AgentEventKind.DEREGISTERED, f"{self.name} ({self.node_id})")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
