"""etcd's errors translated to ours: the one place an aetcd or grpc error is let in.

Unreachable, timed-out or refusing etcd → ``StoreUnavailableError`` naming the endpoint and
what etcd said (``_MemberFailed`` when the member failed rather than the request, so the
call goes to the next member); compaction → ``RevisionCompactedError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aetcd  # type: ignore[import-untyped]  # aetcd 1.0.0 ships no py.typed marker
import aetcd.rpc  # type: ignore[import-untyped]

from node_registry.errors import (
    RevisionCompactedError,
    StoreUnavailableError,
)


class _MemberFailed(StoreUnavailableError):
    """The member in use did not answer (or has no Raft leader): the next one may."""


#: gRPC codes that say the member failed, not the request: try the next member.
_MEMBER_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
_MEMBER_ERRORS = (
    aetcd.ConnectionFailedError,
    aetcd.ConnectionTimeoutError,
    aetcd.WatchTimeoutError,
    TimeoutError,
    OSError,
)


@contextmanager
def _translated(endpoint: str, action: str) -> Iterator[None]:
    """aetcd's and grpc's errors → ours; the one place a library error is allowed in."""
    try:
        yield
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # this task is being cancelled
        # grpc's way to end a call on a channel being closed: the member was left behind.
        raise _MemberFailed(f"etcd at {endpoint} was left for another member ({action})") from None
    except aetcd.RevisionCompactedError as error:
        raise RevisionCompactedError(
            f"resource version is too old: etcd history was compacted up to revision "
            f"{error.compacted_revision}; list again and watch from the list's version"
        ) from error
    except aetcd.rpc.AioRpcError as error:
        raise _rpc_error(endpoint, action, error) from error
    except (aetcd.ClientError, TimeoutError, OSError) as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, aetcd.rpc.AioRpcError):  # aetcd wraps some; say what etcd said
            raise _rpc_error(endpoint, action, cause) from error
        kind = _MemberFailed if isinstance(error, _MEMBER_ERRORS) else StoreUnavailableError
        raise kind(
            f"etcd at {endpoint} did not answer ({action}): {error or type(error).__name__}"
        ) from error


_REFUSALS = {"PERMISSION_DENIED", "UNAUTHENTICATED"}


def _rpc_error(endpoint: str, action: str, error: Any) -> StoreUnavailableError:
    code, details = error.code().name, error.details()
    if code in _REFUSALS or "authentication failed" in details or "permission denied" in details:
        return StoreUnavailableError(
            f"etcd at {endpoint} refused the request ({action}): {details}; check the "
            "registry's etcd credentials (store.etcd_username/etcd_password, client "
            "certificate) and the role's permissions on the key prefix"
        )
    kind = _MemberFailed if code in _MEMBER_CODES else StoreUnavailableError
    return kind(f"etcd at {endpoint} did not answer ({action}): {code}: {details}")
