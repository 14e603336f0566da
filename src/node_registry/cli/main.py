"""The ``node-registry`` command line: validate passports, run the embedded walkthrough."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from node_registry import __version__
from node_registry.cli.example import run_example
from node_registry.errors import RegistryError, ValidationError
from node_registry.passport import load_passport, served_versions

app = typer.Typer(
    name="node-registry",
    help="AI_TEAM Node Registry: node passports, heartbeats, capability search.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


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
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8080]")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="config/node_registry.yaml")
    ] = None,
    store: Annotated[str | None, typer.Option(help="Store URL [default: memory://]")] = None,
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


def main() -> None:
    app()
