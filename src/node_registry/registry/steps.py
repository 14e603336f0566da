"""The registry's procedures without I/O, and the two drivers that run them on a store.

A write of the registry (register, a compare-and-swap loop, a controller pass) is written
once, as a generator: it yields each storage call it needs (``Call``) and receives the
result, or the store's error raised where it yielded. It decides; it never waits. Two
drivers run it: ``run`` over a sync ``Storage`` (the embedded ``Registry``; on etcd the
replica's own loop thread does the waiting), ``run_async`` over an ``AsyncStorage``
awaited on the caller's event loop (``AsyncRegistry``, as the server runs it: on etcd the
replica runs on that loop, so nothing hops between threads or loops). Retries, fencing and
refusals are the procedure's, so both drivers behave alike by construction (the sans-I/O
shape of h11 and httpx's core).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from node_registry.store import Binding, NodeRecord, Versioned
from node_registry.store.aio import AsyncStorage

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One storage call a procedure waits on: ``Storage.<name>(*args, **kwargs)``."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


#: A procedure: yields the calls it needs, returns its result.
Steps = Generator[Call, Any, T]


def run(steps: Steps[T], store: object) -> T:
    """Run ``steps`` to the end, each call on the sync ``store`` (a ``Store``; the lifecycle
    passes its ``Coordination`` alone)."""
    try:
        call = next(steps)
        while True:
            try:
                result = getattr(store, call.name)(*call.args, **call.kwargs)
            except Exception as error:  # the store's refusal, raised where the call was made
                call = steps.throw(error)
            else:
                call = steps.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(steps: Steps[T], store: AsyncStorage, first: Call | None = None) -> T:
    """Run ``steps`` to the end, each call awaited on ``store``; ``first``: the call the
    steps already yielded (their first stretch ran elsewhere, see ``first_call``)."""
    try:
        call = next(steps) if first is None else first
        while True:
            try:
                result = await getattr(store, call.name)(*call.args, **call.kwargs)
            except Exception as error:
                call = steps.throw(error)
            else:
                call = steps.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Done:
    """``first_call``'s answer for steps that finished without calling the store."""

    value: Any


def first_call(steps: Steps[Any]) -> Call | Done:
    """Run ``steps`` up to their first call (in a worker thread: the validation of a whole
    passport comes before it, milliseconds of pure Python). ``StopIteration`` cannot cross
    a future, so a finish is returned as ``Done``."""
    try:
        return next(steps)
    except StopIteration as done:
        return Done(done.value)


# -- the calls, typed -----------------------------------------------------------------------


def get(node_id: str) -> Steps[Versioned | None]:
    found: Versioned | None = yield Call("get", (node_id,))
    return found


def create(record: NodeRecord, *, renewed_at: datetime) -> Steps[int]:
    revision: int = yield Call("create", (record,), {"renewed_at": renewed_at})
    return revision


def update(
    record: NodeRecord,
    *,
    expected_revision: int,
    renewed_at: datetime | None = None,
    fenced: bool = False,
) -> Steps[int]:
    kwargs = {"expected_revision": expected_revision, "renewed_at": renewed_at, "fenced": fenced}
    revision: int = yield Call("update", (record,), kwargs)
    return revision


def delete(
    node_id: str,
    *,
    expected_revision: int | None = None,
    keep: Binding | None = None,
    fenced: bool = False,
) -> Steps[int]:
    kwargs = {"expected_revision": expected_revision, "keep": keep, "fenced": fenced}
    revision: int = yield Call("delete", (node_id,), kwargs)
    return revision


def renew(node_id: str, at: datetime) -> Steps[None]:
    yield Call("renew", (node_id, at))


def binding(name: str) -> Steps[Binding | None]:
    found: Binding | None = yield Call("binding", (name,))
    return found


def forget(name: str) -> Steps[bool]:
    found: bool = yield Call("forget", (name,))
    return found


def objects(kind: str) -> Steps[dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, Any]] = yield Call("objects", (kind,))
    return found


def put_object(kind: str, name: str, doc: dict[str, Any]) -> Steps[None]:
    yield Call("put_object", (kind, name, doc))


def delete_object(kind: str, name: str) -> Steps[bool]:
    found: bool = yield Call("delete_object", (kind, name))
    return found


def publish_state(key: str, doc: dict[str, Any]) -> Steps[None]:
    yield Call("publish_state", (key, doc))


def check_watchable(since: int) -> Steps[None]:
    yield Call("check_watchable", (since,))


def ping() -> Steps[None]:
    yield Call("ping")
