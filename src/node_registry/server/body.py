"""Request bodies: the size limit, the content types read (JSON and YAML), the parse errors.

The limit is enforced by an ASGI middleware before any handler runs, on the declared
Content-Length and again on the bytes actually received (chunked bodies have no length).
Parsing is bounded too, so a small body cannot cost much: nesting deeper than the
passport's ``MAX_NESTING_DEPTH``, integers longer than ``MAX_INTEGER_DIGITS`` and YAML aliases
standing for more than ``MAX_ALIAS_NODES`` values are refused (422) while parsing, before
anything is expanded or converted.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import anyio.to_thread
import yaml
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from node_registry.errors import (
    BadRequestError,
    FieldError,
    TooLargeError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from node_registry.kube.meta import status_from_error
from node_registry.passport import limits

JSON_TYPES = frozenset({"application/json"})
#: Nodes that YAML aliases may stand for in one document, in all (see ``_BoundedComposer``).
MAX_ALIAS_NODES = 1_000
#: Bodies up to this size are parsed on the event loop (well under a millisecond as JSON);
#: larger ones in a worker thread. The registry validates by the same line: a body parsed on
#: the loop holds a passport validated there too.
INLINE_PARSE_BYTES = limits.INLINE_VALIDATION_BYTES
N = TypeVar("N", bound=Node)
T = TypeVar("T")
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})


class BodyTooLarge(HTTPException):
    """Raised inside the receive channel; turned into a 413 Status by the app.

    An ``HTTPException`` so that FastAPI re-raises it while it reads a body into a model
    (leases, status, search) instead of swallowing it into a bare 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")
        self.limit = limit


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes (413) before they reach a handler."""

    def __init__(
        self, app: ASGIApp, limit: int, on_refuse: Callable[[str], None] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.on_refuse = on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                refusal = too_large(self.limit)
                if self.on_refuse is not None:
                    self.on_refuse(refusal.reason)
                await send_status(send, status_from_error(refusal))
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


async def send_status(send: Send, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": body["code"],
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def too_large(limit: int) -> TooLargeError:
    return TooLargeError("request body too large", [FieldError("", f"the limit is {limit} bytes")])


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_document(request: Request) -> Any:
    """The body as a JSON/YAML value; 415 for other types, 400-class errors for bad syntax.

    Bodies over ``INLINE_PARSE_BYTES`` are parsed in a worker thread: a 1 MiB YAML body
    takes the pure-Python composer most of a second, which must not stall the heartbeats
    the event loop serves meanwhile.
    """
    kind = media_type(request)
    if kind and kind not in JSON_TYPES and kind not in YAML_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaTypeError(
            "unsupported content type",
            [FieldError("Content-Type", f"{kind!r}; send application/json or application/yaml")],
        )
    raw = await request.body()
    if not raw.strip():
        raise BadRequestError("empty request body", [FieldError("", "a document is required")])
    yaml_body = kind in YAML_TYPES
    if len(raw) <= INLINE_PARSE_BYTES:
        return parse_document(raw, yaml_body=yaml_body)
    return await anyio.to_thread.run_sync(
        functools.partial(parse_document, raw, yaml_body=yaml_body)
    )


async def off_the_loop_if_large(call: Callable[[], T], size: int) -> T:
    """``call`` (which validates what a body of ``size`` bytes held) on the event loop when
    the body is small, as ``read_document`` parses it, else in a worker thread.

    A passport of a few hundred bytes validates in tens of microseconds, less than the
    thread hop costs (a registration's two hops were most of its server CPU, #14); one of
    256 KiB takes milliseconds, which must not stall the heartbeats.
    """
    if size <= INLINE_PARSE_BYTES:
        return call()
    return await anyio.to_thread.run_sync(call)


def parse_document(raw: bytes, *, yaml_body: bool) -> Any:
    """``raw`` as a JSON (or YAML) value, within the limits of the module docstring."""
    try:
        if yaml_body:
            loader = _BoundedLoader(raw)
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
        return json.loads(raw, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            "malformed JSON", [FieldError("", f"{exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from None
    except yaml.YAMLError as exc:
        raise BadRequestError("malformed YAML", [FieldError("", str(exc))]) from None
    except UnicodeDecodeError as exc:
        raise BadRequestError("the body is not UTF-8", [FieldError("", str(exc))]) from None
    except RecursionError:
        # json's C parser recurses per level; it gives up near Python's recursion limit.
        raise _too_deep("") from None


def _too_deep(where: str) -> ValidationError:
    return ValidationError(
        "the document is nested too deep",
        [FieldError("", f"nested deeper than {limits.MAX_NESTING_DEPTH} levels{where}")],
    )


def _too_long(digits: int, where: str) -> ValidationError:
    return ValidationError(
        "an integer is too long",
        [
            FieldError(
                "", f"an integer of {digits} digits{where}; at most {limits.MAX_INTEGER_DIGITS}"
            )
        ],
    )


def _json_int(text: str) -> int:
    # Checked before int() converts: Python refuses over 4,300 digits with a bare ValueError.
    digits = len(text) - text.startswith("-")
    if digits > limits.MAX_INTEGER_DIGITS:
        raise _too_long(digits, "")
    return int(text)


def _at(mark: Any) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


class _BoundedComposer(Composer):
    """PyYAML's composer with the document's size checked as it is built, not after.

    An alias is cheap to compose (a reference) and costly to expand: nine aliases of nine
    aliases, seven levels deep, are 528 bytes that expand to 9**7 values, which every later
    step (validation, the size check, JSON) walks one by one. So each alias counts the nodes
    it stands for, and past ``MAX_ALIAS_NODES`` in all the document is refused before
    anything is constructed; an alias to a node still being composed (a recursive document,
    which JSON cannot hold) is refused too. Nesting is bounded here as well: the composer
    recurses per level.
    """

    # Provided by the parser this is mixed with (libyaml's or PyYAML's).
    check_event: Callable[..., bool]
    peek_event: Callable[[], Any]

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._aliased = 0
        self._sizes: dict[int, int] = {}
        self._open: set[str] = set()  # anchors of the collections being composed

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            if event.anchor in self._open:
                raise ValidationError(
                    "the YAML document refers to itself",
                    [FieldError("", f"an alias inside its own anchor{_at(event.start_mark)}")],
                )
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:
                self._aliased += self._size(anchored, event.start_mark)
                if self._aliased > MAX_ALIAS_NODES:
                    raise ValidationError(
                        "the YAML document expands too far",
                        [
                            FieldError(
                                "",
                                f"aliases stand for over {MAX_ALIAS_NODES} values in all"
                                f"{_at(event.start_mark)}; write the values out",
                            )
                        ],
                    )
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > limits.MAX_NESTING_DEPTH:
                raise _too_deep(_at(self.peek_event().start_mark))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    # ``anchor`` is the anchor's name or None (types-PyYAML says a dict).
    def compose_sequence_node(self, anchor: Any) -> SequenceNode:
        return self._composing(anchor, super().compose_sequence_node)

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        return self._composing(anchor, super().compose_mapping_node)

    def _composing(self, anchor: str | None, compose: Callable[[Any], N]) -> N:
        if anchor is None:
            return compose(anchor)
        self._open.add(anchor)
        try:
            return compose(anchor)
        finally:
            self._open.discard(anchor)

    def _size(self, node: Node, mark: Any) -> int:
        """How many nodes ``node`` stands for, expanded (a shared node is counted once here:
        the memo keeps this linear in the document, however often it is aliased)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, SequenceNode):
            size += sum(self._size(child, mark) for child in node.value)
        elif isinstance(node, MappingNode):
            size += sum(self._size(k, mark) + self._size(v, mark) for k, v in node.value)
        self._sizes[id(node)] = size
        return size

    def compose_document(self) -> Node | None:
        node = super().compose_document()
        self._sizes.clear()
        return node


def _bounded_int(constructor: SafeConstructor, node: ScalarNode) -> int:
    # Checked before conversion: Python refuses over 4,300 digits with a bare ValueError.
    digits = sum(c.isalnum() for c in str(node.value))
    if digits > limits.MAX_INTEGER_DIGITS:
        raise _too_long(digits, _at(node.start_mark))
    return constructor.construct_yaml_int(node)


class _BoundedConstructor(SafeConstructor):
    """SafeConstructor with integers checked for length before they are converted."""

    yaml_constructors: ClassVar[dict[Any, Any]] = {
        **SafeConstructor.yaml_constructors,
        "tag:yaml.org,2002:int": _bounded_int,
    }


if yaml.__with_libyaml__:
    from yaml._yaml import CParser as _CParser  # libyaml's scanner and parser: 5x PyYAML's

    class _BoundedLoader(_BoundedComposer, _BoundedConstructor, Resolver, _CParser):
        """libyaml's events, composed and constructed in Python under the budget."""

        def __init__(self, stream: bytes) -> None:
            _CParser.__init__(self, stream)
            _BoundedComposer.__init__(self)
            _BoundedConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class _BoundedLoader(Reader, Scanner, Parser, _BoundedComposer, _BoundedConstructor, Resolver):  # type: ignore[no-redef]
        def __init__(self, stream: bytes) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            _BoundedComposer.__init__(self)
            _BoundedConstructor.__init__(self)
            Resolver.__init__(self)
