"""How the CLI shows nodes: kubectl-style tables, ages, ``describe`` text, watch event lines.

Everything here is pure (entries and a ``now`` in, text out), so the commands, the demo and
the tests share one rendering. Tables are plain columns separated by spaces, like
``kubectl get``: no box drawing, no colour, easy to cut with ``awk``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import yaml

from node_registry.client.objects import (
    EventType,
    RegistryEntry,
    WatchEvent,
    event_object,
    list_object,
    object_of,
)
from node_registry.kube.table import NONE, age, cells, tasks
from node_registry.passport import effective_labels
from node_registry.passport.verification import VerificationState, claim_states

#: Spaces between table columns (kubectl's tabwriter pads with 3).
GAP = "   "
COLUMNS = ("NAME", "KIND", "HEALTH", "PHASE", "TASKS", "AGE")
WIDE_COLUMNS = (*COLUMNS, "CAPABILITIES", "ZONE", "ENDPOINT", "LAST-SEEN")
OUTPUT_FORMATS = ("wide", "json", "yaml", "name")


# -- durations and fields: shared with the server's Table (node_registry.kube.table) ------


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as kubectl shows times."""
    text = moment.replace(microsecond=0).isoformat()
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def labels(values: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items())) or NONE


# -- tables ------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns, padded to the widest cell, no trailing spaces."""
    body = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in body) for i in range(len(headers))]
    return "\n".join(
        GAP.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in body
    )


def node_row(entry: RegistryEntry, now: datetime, *, wide: bool = False) -> list[str]:
    """The row the server's Table gives the node (``kube.table.cells``), wide or not."""
    row = [str(cell) for cell in cells(entry, now)]
    return row if wide else row[: len(COLUMNS)]


def nodes_table(
    entries: Sequence[RegistryEntry],
    now: datetime,
    *,
    wide: bool = False,
    show_labels: bool = False,
) -> str:
    """``kubectl get nodes``: the default or ``-o wide`` columns, optionally LABELS last."""
    headers = list(WIDE_COLUMNS if wide else COLUMNS)
    rows = [node_row(e, now, wide=wide) for e in entries]
    if show_labels:
        headers.append("LABELS")
        for row, e in zip(rows, entries, strict=True):
            row.append(labels(e.passport.metadata.labels))
    return table(headers, rows)


def names(entries: Iterable[RegistryEntry]) -> str:
    return "\n".join(f"node/{e.name}" for e in entries)


# -- documents ---------------------------------------------------------------------------


def list_document(entries: Sequence[RegistryEntry], resource_version: int) -> dict[str, Any]:
    """The ``NodePassportList`` document, as the server sends it (``kubectl get -o yaml``)."""
    return list_object(list(entries), resource_version)


def entry_document(entry: RegistryEntry) -> dict[str, Any]:
    return object_of(entry)


def event_document(event: WatchEvent) -> dict[str, Any]:
    return event_object(event)


def to_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


def to_yaml(doc: Any) -> str:
    text: str = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return text.rstrip("\n")


# -- describe ----------------------------------------------------------------------------


def _indent(text: str, spaces: int = 2) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


def _fields(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """``Key:   value`` lines aligned like kubectl describe; multi-line values stay aligned."""
    width = max(len(key) for key, _ in pairs) + 2
    lines: list[str] = []
    for key, value in pairs:
        first, *rest = value.split("\n") if value else [""]
        lines.append(f"{key}:".ljust(width) + first)
        lines.extend(" " * width + line for line in rest)
    return lines


def _label_lines(values: Mapping[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(values.items())) or NONE


def event_health(event: WatchEvent) -> str:
    now = event.entry.health_state.value
    if event.type == EventType.HEALTH_CHANGED and event.previous_health is not None:
        return f"{event.previous_health.value} -> {now}"
    return now


def describe_node(entry: RegistryEntry, events: Sequence[WatchEvent] | None, now: datetime) -> str:
    """``kubectl describe node``: identity, health, trust, labels, spec with each claim's
    verification state, the verifier's results, conditions, passport, events.

    ``events`` None means they could not be read (the section says so).
    """
    passport = entry.passport
    spec = passport.spec
    status = passport.status
    schedulable = entry.schedulable
    states = claim_states(passport, entry.verification)
    failed = [name for name, state in states.items() if state == VerificationState.FAILED]
    lines = _fields(
        [
            ("Name", entry.name),
            ("UID", entry.node_id),
            ("Kind", str(entry.node_kind)),
            ("API Version", passport.api_version),
            ("Health", entry.health_state.value),
            ("Phase", status.phase.value),
            ("Schedulable", str(schedulable).lower()),
            # The registry's Trusted condition, from the verifier's results (#12).
            ("Trusted", f"false (failed: {', '.join(failed)})" if failed else "true"),
            ("Tasks", tasks(passport)),
            (
                "Registered",
                f"{timestamp(entry.registered_at)} ({age(entry.registered_at, now)} ago)",
            ),
            ("Last Seen", f"{timestamp(entry.last_seen)} ({age(entry.last_seen, now)} ago)"),
            ("Resource Version", str(entry.resource_version)),
            ("Labels", _label_lines(passport.metadata.labels)),
            ("Effective Labels", _label_lines(effective_labels(passport))),
            ("Annotations", _label_lines(passport.metadata.annotations)),
        ]
    )

    lines.append("Capabilities:")
    if spec.capabilities:
        rows = [
            [
                c.name,
                c.version or NONE,
                json.dumps(c.params, separators=(",", ":"), default=str) if c.params else NONE,
                states[c.name],
            ]
            for c in spec.capabilities
        ]
        lines.append(_indent(table(["NAME", "VERSION", "PARAMS", "VERIFICATION"], rows)))
    else:
        lines.append(f"  {NONE}")

    lines.append("Verification:")
    if entry.verification:
        rows = [
            [
                r.capability,
                r.state.value,
                r.reason,
                timestamp(r.checked_at),
                r.probe or "",
                r.message,
            ]
            for r in sorted(entry.verification.values(), key=lambda r: r.capability)
        ]
        headers = ["CAPABILITY", "STATE", "REASON", "CHECKED", "PROBE", "MESSAGE"]
        lines.append(_indent(table(headers, rows)))
    else:
        lines.append(f"  {NONE}")

    lines.append("Resources:")
    if spec.resources:
        lines.extend(_indent(line) for line in _fields(sorted(spec.resources.items())))
    else:
        lines.append(f"  {NONE}")

    lines.append("Endpoint:")
    if spec.endpoint is not None:
        ep = [("Protocol", spec.endpoint.protocol), ("Address", spec.endpoint.address)]
        if spec.endpoint.queue:
            ep.append(("Queue", spec.endpoint.queue))
        lines.extend(_indent(line) for line in _fields(ep))
    else:
        lines.append(f"  {NONE}")

    lines.append("Conditions:")
    if status.conditions:
        rows = [
            [
                c.type,
                c.status.value,
                c.reason or "",
                c.message or "",
                timestamp(c.last_transition_time) if c.last_transition_time else "",
            ]
            for c in status.conditions
        ]
        lines.append(
            _indent(table(["TYPE", "STATUS", "REASON", "MESSAGE", "LAST-TRANSITION"], rows))
        )
    else:
        lines.append(f"  {NONE}")

    lines.append("Passport:")
    lines.append(_indent(to_yaml(passport.to_dict())))

    lines.append("Events:")
    if events is None:
        lines.append("  <unavailable>")
    elif events:
        rows = [[e.type.value, event_health(e), str(e.resource_version)] for e in events]
        lines.append(_indent(table(["TYPE", "HEALTH", "RESOURCE-VERSION"], rows)))
    else:
        lines.append(f"  {NONE}")
    return "\n".join(lines)


# -- watch lines -------------------------------------------------------------------------

#: Fixed widths: a stream cannot be measured in advance, so columns are padded generously.
EVENT_WIDTHS = (8, 14, 28, 20)
EVENT_HEADERS = ("TIME", "EVENT", "NAME", "HEALTH", "RESOURCE-VERSION")


def _event_cells(cells: Sequence[str]) -> str:
    padded = [cell.ljust(width) for cell, width in zip(cells, EVENT_WIDTHS, strict=False)]
    return "  ".join([*padded, *cells[len(EVENT_WIDTHS) :]]).rstrip()


def event_header() -> str:
    return _event_cells(EVENT_HEADERS)


def event_line(event: WatchEvent, when: str) -> str:
    """One watch event: time, type, name, health (``A -> B`` on a transition), version."""
    return _event_cells(
        [when, event.type.value, event.entry.name, event_health(event), str(event.resource_version)]
    )
