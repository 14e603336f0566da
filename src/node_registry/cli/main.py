"""The ``node-registry`` command line: kubectl-style commands against a registry, and local tools.

Local: ``validate``, ``example``, ``version``, ``serve``, ``demo``. Against a running registry
(``--server``/``NODE_REGISTRY_URL``, ``--token``/``NODE_REGISTRY_TOKEN``, or a kubeconfig:
``--kubeconfig``/``--context``, see ``client.kubeconfig``): ``get``,
``describe``, ``apply``, ``delete``, ``watch``, and ``agent`` (the node runtime). Like kubectl,
every command exits 0 on success and 1 on failure with one ``error: ...`` line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console

from node_registry import __version__
from node_registry.cli import output
from node_registry.cli.example import run_example
from node_registry.client import RegistryClient
from node_registry.client.kubeconfig import resolve
from node_registry.client.objects import HealthTracker, RegistryEntry, WatchEvent
from node_registry.client.settings import TOKEN_ENV, URL_ENV
from node_registry.errors import (
    ForbiddenError,
    NotFoundError,
    RegistryError,
    RegistryUnreachableError,
    RevisionCompactedError,
    UnauthorizedError,
    ValidationError,
)
from node_registry.labels import dns1123_label_errors
from node_registry.passport import NodePassport, NodeType, load_passport, served_versions
from node_registry.selectors import as_selector

app = typer.Typer(
    name="node-registry",
    help="AI_TEAM Node Registry: node passports, heartbeats, capability search.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

#: The resource names ``get``/``describe``/``delete`` accept, as kubectl does for nodes.
NODE_RESOURCES = ("nodes", "node", "no")
#: How long ``describe`` reads the event history (the watch's server-side timeout).
DESCRIBE_EVENTS_SECONDS = 1
#: Where ``describe`` reads the history from: after the registry's first change (a watch
#: from 0 is Kubernetes' "the current state", not the history).
HISTORY_START = 1
#: How many of a node's most recent events ``describe`` shows.
DESCRIBE_EVENTS_LIMIT = 20

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        envvar=URL_ENV,
        show_envvar=True,
        help="Registry URL, or several comma-separated (default: http://127.0.0.1:8080)",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar=TOKEN_ENV, show_envvar=True, help="Bearer token"),
]
SelectorOption = Annotated[
    str | None,
    typer.Option(
        "--selector", "-l", help="Label selector (effective labels), e.g. 'zone=eu-west-1,gpu'"
    ),
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="kubeconfig file to connect with (default: $KUBECONFIG, else ~/.kube/config "
        "when no --server is given)",
    ),
]
ContextOption = Annotated[
    str | None, typer.Option("--context", help="kubeconfig context (default: current-context)")
]
CAOption = Annotated[
    Path | None,
    typer.Option("--certificate-authority", help="CA bundle (PEM) to verify the server with"),
]
KindOption = Annotated[
    str | None,
    typer.Option("--kind", help=f"Node kind: {', '.join(k.value for k in NodeType)}"),
]


# -- plumbing shared by the commands that talk to a registry ------------------------------


class Failed(Exception):
    """A command failed in a way already explained; exit 1 with this one-line message."""


def _fail(message: str) -> NoReturn:
    raise Failed(message)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(message: str) -> None:
    typer.echo(f"error: {_one_line(message)}", err=True)


def _explain(exc: Exception, name: str | None = None) -> str:
    """The message for ``exc`` as a person reads it (kubectl names the reason the same way)."""
    if isinstance(exc, NotFoundError) and name is not None:
        return f'node "{name}" not found'
    if isinstance(exc, UnauthorizedError):
        return (
            f"Unauthorized: {exc} (give a token with --token or the {TOKEN_ENV} environment "
            "variable)"
        )
    if isinstance(exc, ForbiddenError):
        return f"Forbidden: {exc}"
    if isinstance(exc, RegistryUnreachableError):
        return f"cannot reach the registry: {exc}"
    return str(exc)


@contextlib.contextmanager
def _command() -> Iterator[None]:
    """Turn every failure a user can cause into ``error: ...`` and exit 1; Ctrl-C exits 130."""
    try:
        yield
    except Failed as exc:
        _error(str(exc))
        raise typer.Exit(1) from None
    except RegistryError as exc:  # the client lets no httpx error through
        _error(_explain(exc))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _client(
    server: str | None,
    token: str | None,
    kubeconfig: Path | None = None,
    context: str | None = None,
    certificate_authority: Path | None = None,
) -> RegistryClient:
    """A client of the registry the flags, environment or kubeconfig point at (in that order)."""
    connection = resolve(
        server=server or None,
        token=token or None,
        certificate_authority=str(certificate_authority) if certificate_authority else None,
        kubeconfig=kubeconfig,
        context=context,
    )
    # One retry round: a person at a terminal wants the answer (or the error) quickly.
    return RegistryClient(
        connection.server,
        token=connection.token,
        verify=connection.verify,
        timeout=5.0,
        retries=1,
        backoff=0.2,
    )


def _resource(resource: str) -> None:
    if resource.lower() not in NODE_RESOURCES:
        _fail(
            f'the registry has no resource type "{resource}" (known: {", ".join(NODE_RESOURCES)})'
        )


def _kind(kind: str | None) -> str | None:
    if kind is None:
        return None
    # Custom node types are the registry's to know: only the name's syntax is checked here.
    if problems := dns1123_label_errors(kind):
        allowed = ", ".join(k.value for k in NodeType)
        _fail(
            f"unknown node kind {kind!r} ({'; '.join(problems)}): use a built-in type "
            f"({allowed}) or a registered one"
        )
    return kind


def _output(value: str | None) -> str | None:
    if value is not None and value not in output.OUTPUT_FORMATS:
        _fail(f"unknown output format {value!r}: use one of {', '.join(output.OUTPUT_FORMATS)}")
    return value


def _now() -> datetime:
    return datetime.now(UTC)


def _read_documents(path: Path) -> list[Any]:
    if str(path) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".json":
            return [json.loads(text)]
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(f"{path} is not valid YAML/JSON: {exc}") from None


@app.command()
def validate(
    file: Annotated[Path, typer.Option("-f", "--filename", help="Passport YAML/JSON; - for stdin")],
) -> None:
    """Check passports offline; errors point at the field. Exit 1 if any is invalid."""
    try:
        documents = _read_documents(file)
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    failed = 0
    for index, doc in enumerate(documents):
        where = f"{file}" + (f" (document {index + 1})" if len(documents) > 1 else "")
        try:
            passport = load_passport(doc)
        except ValidationError as exc:
            failed += 1
            err.print(f"[red]invalid[/red] {where}: {exc.message}", highlight=False)
            for problem in exc.errors:
                err.print(f"  - {problem}", highlight=False, soft_wrap=True)
            continue
        out.print(
            f"valid {where}: {passport.metadata.name} ({passport.node_id}), {passport.api_version}",
            highlight=False,
        )
    if failed:
        raise typer.Exit(1)


@app.command()
def example() -> None:
    """Run the embedded in-memory registry through a node's life, on simulated time."""
    try:
        run_example(out)
    except RegistryError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: 8080)")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="config/node_registry.yaml")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="memory:// (default) or etcd://host:2379[,host:2379]/key-prefix"),
    ] = None,
    tokens_file: Annotated[
        Path | None, typer.Option(help="YAML file of bearer tokens and their roles")
    ] = None,
    tls_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM)")] = None,
    tls_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM)")] = None,
    allow_insecure: Annotated[
        bool,
        typer.Option(help="Serve without tokens on a non-loopback address (never in production)"),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the registry as an HTTP service (memory:// by default)."""
    from node_registry.cli.serve import run_server

    overrides = {
        "host": host,
        "port": port,
        "tokens_file": tokens_file,
        "tls_certfile": tls_certfile,
        "tls_keyfile": tls_keyfile,
        "allow_insecure": allow_insecure or None,
    }
    try:
        run_server(
            config=config,
            server={k: v for k, v in overrides.items() if v is not None},
            store_url=store,
            log_level=log_level,
        )
    except RegistryError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


@app.command()
def version() -> None:
    """Print the version and the passport versions served."""
    out.print(f"node-registry {__version__}", highlight=False)
    out.print(f"passport versions: {', '.join(served_versions())}", highlight=False)


# -- get, describe ------------------------------------------------------------------------


def _print_nodes(
    entries: Sequence[RegistryEntry],
    resource_version: int,
    fmt: str | None,
    *,
    show_labels: bool,
    single: bool = False,
) -> None:
    if fmt in ("json", "yaml"):
        doc = (
            output.entry_document(entries[0])
            if single and len(entries) == 1
            else output.list_document(entries, resource_version)
        )
        typer.echo(output.to_json(doc) if fmt == "json" else output.to_yaml(doc))
    elif not entries:
        typer.echo("No resources found.", err=True)
    elif fmt == "name":
        typer.echo(output.names(entries))
    else:
        typer.echo(output.nodes_table(entries, _now(), wide=fmt == "wide", show_labels=show_labels))


def _get_named(client: RegistryClient, names: Sequence[str]) -> tuple[list[RegistryEntry], bool]:
    """The named nodes that exist, and whether any did not (each one reported on stderr)."""
    found: list[RegistryEntry] = []
    missing = False
    for name in names:
        try:
            found.append(client.get(name))
        except NotFoundError as exc:
            _error(_explain(exc, name))
            missing = True
    return found, missing


def _select(
    client: RegistryClient,
    selector: str | None,
    kind: str | None,
    healthy: bool,
    verified: bool = False,
) -> list[RegistryEntry]:
    # Parsed here too, so a bad selector fails before any request, naming the bad part.
    parsed = as_selector(selector)
    return client.find_nodes(
        kind=_kind(kind), selector=parsed, only_healthy=healthy, only_verified=verified
    )


@app.command()
def get(
    resource: Annotated[str, typer.Argument(help="nodes (also: node, no)", show_default=False)],
    names: Annotated[
        list[str] | None, typer.Argument(help="Node names (default: every node)")
    ] = None,
    selector: SelectorOption = None,
    kind: KindOption = None,
    healthy: Annotated[
        bool,
        typer.Option("--healthy", help="Only schedulable nodes (ALIVE, Running, not Ready=False)"),
    ] = False,
    verified: Annotated[
        bool,
        typer.Option(
            "--verified",
            help="Only Verified claims match capability.<name>, and only trusted nodes",
        ),
    ] = False,
    output_format: Annotated[
        str | None, typer.Option("--output", "-o", help="wide | json | yaml | name")
    ] = None,
    show_labels: Annotated[
        bool, typer.Option("--show-labels", help="Add a LABELS column (the node's own labels)")
    ] = False,
    server: ServerOption = None,
    token: TokenOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    certificate_authority: CAOption = None,
) -> None:
    """List nodes like kubectl get nodes: NAME KIND HEALTH PHASE TASKS AGE."""
    missing = False
    with _command():
        _resource(resource)
        fmt = _output(output_format)
        if names and (selector or kind or healthy or verified):
            _fail(
                "node names cannot be given together with --selector, --kind, --healthy "
                "or --verified"
            )
        with _client(server, token, kubeconfig, context, certificate_authority) as client:
            if names:
                entries, missing = _get_named(client, names)
            else:
                entries = _select(client, selector, kind, healthy, verified)
        # The client answers items only; the newest item's version stands in for the list's
        # (a watch from it misses no later change to these items).
        resource_version = max((e.resource_version for e in entries), default=0)
        if entries or not missing:
            _print_nodes(
                entries,
                resource_version,
                fmt,
                show_labels=show_labels,
                single=len(names or ()) == 1,
            )
    if missing:
        raise typer.Exit(1)


def _events_by_name(
    client: RegistryClient, entries: Sequence[RegistryEntry]
) -> dict[str, list[WatchEvent]] | None:
    """Each node's recent events, read from the watch history (``HISTORY_START`` onwards),
    health transitions named as such.

    When the registry no longer keeps the whole history, the nodes' latest changes still are
    (from just before the oldest of their versions); None when even that is gone.
    """
    wanted = {e.name for e in entries}
    starts = [HISTORY_START, max(min(e.resource_version for e in entries) - 1, HISTORY_START)]
    for since in dict.fromkeys(starts):
        try:
            events = list(client.watch(since, timeout_seconds=DESCRIBE_EVENTS_SECONDS))
        except RevisionCompactedError:
            continue
        found: dict[str, list[WatchEvent]] = {name: [] for name in wanted}
        named = HealthTracker()
        for event in map(named, events):
            if event.entry.name in wanted:
                found[event.entry.name].append(event)
        return {name: items[-DESCRIBE_EVENTS_LIMIT:] for name, items in found.items()}
    return None


@app.command()
def describe(
    resource: Annotated[str, typer.Argument(help="node (also: nodes, no)", show_default=False)],
    names: Annotated[
        list[str] | None, typer.Argument(help="Node names (default: every node selected)")
    ] = None,
    selector: SelectorOption = None,
    kind: KindOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    certificate_authority: CAOption = None,
) -> None:
    """Show one node in detail: health, trust and verification, labels, spec, conditions,
    passport, recent events."""
    missing = False
    with _command():
        _resource(resource)
        if names and (selector or kind):
            _fail("node names cannot be given together with --selector or --kind")
        with _client(server, token, kubeconfig, context, certificate_authority) as client:
            if names:
                entries, missing = _get_named(client, names)
            else:
                entries = _select(client, selector, kind, False)
            if not entries:
                if not missing:
                    typer.echo("No resources found.", err=True)
            else:
                events = _events_by_name(client, entries)
                now = _now()
                typer.echo(
                    "\n\n".join(
                        output.describe_node(
                            e, None if events is None else events.get(e.name, []), now
                        )
                        for e in entries
                    )
                )
    if missing:
        raise typer.Exit(1)


# -- apply, delete -----------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """YAML reads unquoted dates as dates; JSON has none, so they travel as ISO text."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _load_for_apply(files: Sequence[Path]) -> list[tuple[NodePassport, Any]]:
    """Every document of every file, validated offline: all valid, or nothing is sent."""
    loaded: list[tuple[NodePassport, Any]] = []
    problems: list[str] = []
    for file in files:
        try:
            documents = _read_documents(file)
        except ValidationError as exc:
            problems.append(str(exc))
            continue
        if not documents:
            problems.append(f"{file}: no passports in it")
        for index, doc in enumerate(documents):
            where = f"{file}" + (f" (document {index + 1})" if len(documents) > 1 else "")
            try:
                loaded.append((load_passport(doc), doc))
            except ValidationError as exc:
                problems.append(f"{where}: {exc}")
    if problems:
        for problem in problems[:-1]:
            _error(problem)
        _fail(problems[-1] + " (nothing was applied)")
    return loaded


@app.command()
def apply(
    files: Annotated[
        list[Path],
        typer.Option(
            "-f", "--filename", help="Passport YAML/JSON (multi-document YAML; - = stdin)"
        ),
    ],
    server: ServerOption = None,
    token: TokenOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    certificate_authority: CAOption = None,
) -> None:
    """Register (or re-register) the passports in FILE, after validating them all offline."""
    failed = False
    with _command():
        passports = _load_for_apply(files)
        with _client(server, token, kubeconfig, context, certificate_authority) as client:
            for passport, doc in passports:
                name = passport.metadata.name
                try:
                    existed: bool | None
                    try:
                        client.get(name)
                        existed = True
                    except NotFoundError:
                        existed = False
                    except ForbiddenError:
                        existed = None  # a node's own token may write its node, not read it
                    entry = client.register(_json_safe(doc))
                    if existed is None:
                        # A new entry's lease starts at its registration; a re-registration
                        # keeps the first registration time.
                        existed = entry.registered_at != entry.last_seen
                    verb = "configured" if existed else "created"
                except (RegistryUnreachableError, UnauthorizedError):
                    raise
                except RegistryError as exc:
                    _error(f"node/{name}: {_explain(exc)}")
                    failed = True
                    continue
                typer.echo(f"node/{name} {verb}")
    if failed:
        raise typer.Exit(1)


@app.command()
def delete(
    resource: Annotated[str, typer.Argument(help="node (also: nodes, no)", show_default=False)],
    names: Annotated[list[str], typer.Argument(help="Node names", show_default=False)],
    server: ServerOption = None,
    token: TokenOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    certificate_authority: CAOption = None,
) -> None:
    """Deregister nodes by name."""
    failed = False
    with _command():
        _resource(resource)
        with _client(server, token, kubeconfig, context, certificate_authority) as client:
            for name in names:
                try:
                    client.deregister(name)
                except NotFoundError as exc:
                    _error(_explain(exc, name))
                    failed = True
                    continue
                typer.echo(f"node/{name} deleted")
    if failed:
        raise typer.Exit(1)


# -- watch -------------------------------------------------------------------------------


@app.command()
def watch(
    selector: SelectorOption = None,
    kind: KindOption = None,
    since: Annotated[
        int | None,
        typer.Option(
            "--since",
            min=0,
            help="Resource version to start after; 0 starts with the current nodes as ADDED "
            "(default: now)",
        ),
    ] = None,
    timeout: Annotated[
        int | None, typer.Option("--timeout", min=1, help="Stop after this many seconds")
    ] = None,
    output_format: Annotated[
        str | None, typer.Option("--output", "-o", help="json: one watch event per line")
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    certificate_authority: CAOption = None,
) -> None:
    """Print node events as they happen: time, type, name, health, resource version."""
    with _command():
        if output_format not in (None, "json"):
            _fail(f"unknown output format {output_format!r} for watch: use json")
        wanted, parsed = _kind(kind), as_selector(selector)
        with _client(server, token, kubeconfig, context, certificate_authority) as client:
            named = HealthTracker()
            if since is None:
                listed = client.list_nodes()
                named.know(listed.items)
                start = listed.resource_version
            else:
                start = since
            if output_format is None:
                typer.echo(output.event_header())
            # Filtered by the server, as kubectl get -w -l: a node leaving the selection is
            # a DELETED, one entering it an ADDED.
            events = client.watch(start, timeout_seconds=timeout, kind=wanted, selector=parsed)
            for event in map(named, events):
                if output_format == "json":
                    line = json.dumps(output.event_document(event), separators=(",", ":"))
                else:
                    line = output.event_line(event, datetime.now().strftime("%H:%M:%S"))
                typer.echo(line)


# -- agent, demo -------------------------------------------------------------------------


@app.command()
def agent(
    file: Annotated[
        Path, typer.Option("-f", "--filename", help="This node's passport (YAML/JSON)")
    ],
    server: ServerOption = None,
    token: TokenOption = None,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            min=0.1,
            help="Heartbeat interval in seconds (default: heartbeat.interval_seconds, 10)",
        ),
    ] = None,
    detect: Annotated[
        bool,
        typer.Option(
            "--detect/--no-detect",
            help="Fill in resources the passport leaves out from this machine (CPU, memory, GPU)",
        ),
    ] = True,
) -> None:
    """Run the node runtime: register this passport, heartbeat, re-register after outages."""
    from node_registry.cli.agent_command import run_agent

    code = run_agent(file, endpoints=server, token=token, interval=interval, detect=detect)
    raise typer.Exit(code)


@app.command()
def demo(
    agents: Annotated[
        int, typer.Option("--agents", min=3, max=500, help="Simulated agents to run")
    ] = 30,
    seconds: Annotated[float, typer.Option("--seconds", min=5, help="How long the demo runs")] = 20,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (default: any free)")
    ] = 0,
) -> None:
    """Watch a registry at work: a local server, simulated agents, failures, the transitions."""
    from node_registry.cli.demo import run_demo

    with _command():
        code = run_demo(agents=agents, seconds=seconds, port=port)
    raise typer.Exit(code)


# -- verify (#12) -------------------------------------------------------------------------


@app.command()
def verify(
    file: Annotated[Path, typer.Option("-f", "--filename", help="The probes (a ProbeSet in YAML)")],
    server: ServerOption = None,
    token: TokenOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    certificate_authority: CAOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="One round: probe what is due, record it, exit")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", min=0.1, help="Longest wait between rounds in seconds (changes: at once)"
        ),
    ] = 30.0,
    reverify_after: Annotated[
        float, typer.Option("--reverify-after", min=1, help="Probe a Verified claim again after")
    ] = 86400.0,
    retry_after: Annotated[
        float, typer.Option("--retry-after", min=1, help="Retry a Failed claim after (doubling)")
    ] = 60.0,
) -> None:
    """Verify nodes' capabilities with probe tasks and record the results (a verifier token)."""
    import asyncio

    from node_registry.cli.verify import run_verifier
    from node_registry.client import AsyncRegistryClient
    from node_registry.verification import VerificationPolicy, Verifier, read_probes

    with _command():
        probes = read_probes(file)
        policy = VerificationPolicy(
            reverify_after_seconds=reverify_after, retry_after_seconds=retry_after
        )
        connection = resolve(
            server=server or None,
            token=token or None,
            certificate_authority=str(certificate_authority) if certificate_authority else None,
            kubeconfig=kubeconfig,
            context=context,
        )

        async def run() -> int:
            async with (
                AsyncRegistryClient(
                    connection.server, token=connection.token, verify=connection.verify
                ) as client,
                Verifier(probes) as verifier,
            ):
                return await run_verifier(
                    client,
                    verifier,
                    policy,
                    once=once,
                    interval=interval,
                    report=typer.echo,
                )

        recorded = asyncio.run(run())
        if once:
            typer.echo(f"recorded results for {recorded} node{'s' if recorded != 1 else ''}")


def main() -> None:
    app()
