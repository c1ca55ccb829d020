"""Test-only: a stand-in for the session `dagger run` gives a program, so the real dagger-io client
(connection, transport, blocking portal, GraphQL error payloads) runs in CI without an engine.

It is an HTTP server on 127.0.0.1 that checks the session token like the CLI does, validates every
query against the real Dagger 0.21 schema (../shared/reference/dagger-0.21-schema.graphqls) with
graphql-core, records it, and executes it: objects are chains of the calls that made them, IDs encode
those chains, and only the calls whose effect the tool depends on act: Directory.export writes a file
that describes what was exported, Container.exportImage makes an (empty) image of that name in the
local Docker (the tool then reads its ID there), publish answers a digest. No container runs.
With `docker=None` (unit tests) no Docker is used: every local image exists and exportImage only
records its name.

Faults play back what a real engine answers: an exec that fails (EXEC_ERROR with stderr), a pull
that fails, a lost connection, an older engine (its version and a schema without the newer fields).
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import re
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphql

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "reference" / "dagger-0.21-schema.graphqls"
EXPORT_RECORD = "dagger-standin-export.json"  # what Directory.export writes into the destination


class _Void:
    """A Void value: written as JSON null."""


VOID = _Void()


@dataclass
class Node:
    """An object of the API: its type and the calls that made it (what the engine would evaluate)."""

    type: str
    chain: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def execs(self) -> list[list[str]]:
        out = []
        for name, args in self.chain:
            if name == "withExec":
                out.append(list(args.get("args", [])))
            for v in args.values():
                if isinstance(v, Node):
                    out += v.execs()
        return out

    def calls(self, name: str) -> list[dict[str, Any]]:
        return [args for n, args in self.chain if n == name]

    def to_json(self) -> Any:
        def plain(v: Any) -> Any:
            if isinstance(v, Node):
                return v.to_json()
            if isinstance(v, list):
                return [plain(x) for x in v]
            return v

        return {"type": self.type, "chain": [[n, {k: plain(v) for k, v in a.items()}] for n, a in self.chain]}


@dataclass
class Effect:
    """An export, exportImage or publish the stand-in carried out: on which object, with which args."""

    node: Node
    call: str
    args: dict[str, Any]


@dataclass
class Fault:
    kind: str  # exec | pull | lost-connection
    match: str  # a substring of the failing exec's argv, the image address, or the query text
    exit_code: int = 1
    stderr: str = ""
    detail: bool = True  # false: the EXEC_ERROR comes with null cmd, exitCode, stdout and stderr


class _Server(http.server.ThreadingHTTPServer):
    """A dagger-io client opens a connection per concurrent query: on a busy CI machine the default
    listen backlog (5) refused some, and the client retried (gql backoff). The engine's own backlog is
    far larger."""

    request_queue_size = 128
    daemon_threads = True


class Session:
    def __init__(
        self, version: str = "v0.21.11", drop_fields: tuple[str, ...] = (), docker: str | None = "/usr/bin/docker"
    ):
        self.schema = _schema(drop_fields)
        self.version = version
        self.docker = docker
        self.token = secrets.token_hex(16)
        self.queries: list[str] = []
        self.invalid: list[str] = []  # validation errors: a correct client sends none
        self.effects: list[Effect] = []
        self.images: list[str] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def env(self) -> dict[str, str]:
        """What `dagger run` sets for its child process."""
        return {"DAGGER_SESSION_PORT": str(self.port), "DAGGER_SESSION_TOKEN": self.token}

    def close(self) -> None:
        """Stop serving; remove the images exportImage made."""
        self.server.shutdown()
        self.server.server_close()
        if self.docker is not None and self.images:
            subprocess.run([self.docker, "rmi", "-f", *set(self.images)], capture_output=True, check=False)

    def sent(self, type_field: str) -> list[Effect]:
        """The effects of `Type.field` (Directory.export, Container.exportImage, Container.publish)."""
        t, f = type_field.split(".")
        return [e for e in self.effects if e.node.type == t and e.call == f]

    def fields(self) -> set[str]:
        """Every `Type.field` the recorded queries selected (the client's schema introspection left out)."""
        out: set[str] = set()
        for q in self.queries:
            out |= _selected(self.schema, q)
        return out

    # --- HTTP ----------------------------------------------------------------------------------------
    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        session = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                expected = "Basic " + base64.b64encode(f"{session.token}:".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_error(401)
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                query = body.get("query", "")
                if any(f.kind == "lost-connection" and f.match in query for f in session.faults):
                    self.close_connection = True
                    self.connection.shutdown(2)  # the engine went away mid-request
                    return
                answer = session.execute(query, body.get("variables") or {})
                data = json.dumps(answer, default=lambda v: None if v is VOID else str(v)).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on this request (and retries it): nothing to answer

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    # --- GraphQL -------------------------------------------------------------------------------------
    def execute(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.queries.append(query)
        try:
            document = graphql.parse(query)
        except graphql.GraphQLError as e:
            self.invalid.append(str(e))
            return {"errors": [e.formatted]}
        errors = graphql.validate(self.schema, document)
        if errors:
            self.invalid += [e.message for e in errors]
            return {"errors": [e.formatted for e in errors]}
        result = graphql.execute(
            self.schema, document, root_value=Node("Query"), variable_values=variables, field_resolver=self._resolve
        )
        out: dict[str, Any] = {"data": result.data}  # type: ignore[union-attr]
        if result.errors:  # type: ignore[union-attr]
            out["errors"] = [e.formatted for e in result.errors]  # type: ignore[union-attr]
        return out

    def _resolve(self, parent: Node, info: graphql.GraphQLResolveInfo, /, **args: Any) -> Any:
        # positional-only: `source` is also an argument name in the API (withDirectory(source: …))
        name = info.field_name
        args = {k: self._decode(v) for k, v in args.items()}
        named = graphql.get_named_type(info.return_type)
        if name == "node":
            return args["id"]
        if isinstance(named, graphql.GraphQLObjectType | graphql.GraphQLInterfaceType):
            node = Node(named.name, [*parent.chain, (name, args)])
            if name == "containerImage":
                self._check_local_image(args["name"])
            return node
        return self._scalar(parent, name, args, named)

    def _scalar(self, parent: Node, name: str, args: dict[str, Any], named: graphql.GraphQLNamedType) -> Any:
        if name == "version":
            return self.version
        if name in ("combinedOutput", "stdout", "stderr"):  # evaluates the container: faults apply
            self._faults(parent)
            execs = parent.execs()
            return f"(stand-in {name} of: {' '.join(execs[-1]) if execs else 'no exec'})\n"
        if name in ("id", "sync"):
            return "standin:" + base64.urlsafe_b64encode(json.dumps(parent.to_json()).encode()).decode()
        if name in ("export", "exportImage", "publish"):
            return self._effect(parent, name, args)
        if named.name == "Void":
            return VOID
        if named.name == "Boolean":
            return False
        if named.name == "Int":
            return 0
        if isinstance(named, graphql.GraphQLEnumType):
            return next(iter(named.values))
        return ""

    def _effect(self, node: Node, name: str, args: dict[str, Any]) -> Any:
        self._faults(node)
        with self._lock:
            self.effects.append(Effect(node, name, args))
        if name == "export" and node.type == "Directory":
            dest = Path(args["path"])
            dest.mkdir(parents=True, exist_ok=True)
            (dest / EXPORT_RECORD).write_text(json.dumps(node.to_json(), indent=1))
            return str(dest)
        if name == "exportImage":
            if self.docker is not None:
                empty = subprocess.run(["tar", "-c", "-T", "/dev/null"], capture_output=True, check=True).stdout
                subprocess.run([self.docker, "import", "-", args["name"]], input=empty, capture_output=True, check=True)
            self.images.append(args["name"])
            return VOID
        if name == "publish":
            return f"{args['address']}@sha256:{'0' * 64}"
        return args.get("path", "")

    def _faults(self, node: Node) -> None:
        for f in self.faults:
            if f.kind == "exec":
                for argv in node.execs():
                    if f.match in " ".join(argv):
                        ext: dict[str, Any] = {
                            "_type": "EXEC_ERROR",
                            "cmd": argv,
                            "exitCode": f.exit_code,
                            "stdout": "",
                            "stderr": f.stderr,
                        }
                        if not f.detail:
                            ext.update(cmd=None, exitCode=None, stdout=None, stderr=None)
                        raise graphql.GraphQLError(
                            f"process did not complete successfully: exit code: {f.exit_code}", extensions=ext
                        )
            if f.kind == "pull":
                for call in _all_calls(node, "from"):
                    if f.match in call.get("address", ""):
                        raise graphql.GraphQLError(
                            f"failed to resolve source metadata for {call['address']}: "
                            f"{f.stderr or 'pull access denied'}"
                        )

    def _check_local_image(self, name: str) -> None:
        if self.docker is None:
            return
        if subprocess.run([self.docker, "image", "inspect", name], capture_output=True).returncode != 0:
            raise graphql.GraphQLError(f"failed to load image {name} from the host: no such image")

    def _decode(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("standin:"):
            data = json.loads(base64.urlsafe_b64decode(value.removeprefix("standin:")))
            return _node(data)
        if isinstance(value, list):
            return [self._decode(v) for v in value]
        return value


@functools.lru_cache(maxsize=4)
def _schema(drop_fields: tuple[str, ...]) -> graphql.GraphQLSchema:
    sdl = SCHEMA.read_text()
    for dotted in drop_fields:  # an older engine: e.g. Container.withVolatileVariable (new in 0.21.4)
        sdl = _drop_field(sdl, dotted)
    schema = graphql.build_schema(sdl)
    # The engine answers `null` for a Void! field (dagql's Void marshals to null); graphql-core would
    # call that an error, so it serializes a marker that the response writes as null.
    void = schema.type_map["Void"]
    assert isinstance(void, graphql.GraphQLScalarType)
    void.serialize = lambda _value: VOID  # type: ignore[method-assign]
    return schema


def _selected(schema: graphql.GraphQLSchema, query: str) -> set[str]:
    info = graphql.TypeInfo(schema)
    out: set[str] = set()

    class Visitor(graphql.Visitor):
        def enter_field(self, node: graphql.FieldNode, *_: Any) -> None:
            parent = info.get_parent_type()
            if parent is not None and not parent.name.startswith("__") and not node.name.value.startswith("__"):
                out.add(f"{parent.name}.{node.name.value}")

    graphql.visit(graphql.parse(query), graphql.TypeInfoVisitor(info, Visitor()))
    return out


def _node(data: dict[str, Any]) -> Node:
    def back(v: Any) -> Any:
        if isinstance(v, dict) and set(v) == {"type", "chain"}:
            return _node(v)
        if isinstance(v, list):
            return [back(x) for x in v]
        return v

    return Node(data["type"], [(n, {k: back(x) for k, x in a.items()}) for n, a in data["chain"]])


def _all_calls(node: Node, name: str) -> list[dict[str, Any]]:
    out = list(node.calls(name))
    for _, args in node.chain:
        for v in args.values():
            if isinstance(v, Node):
                out += _all_calls(v, name)
    return out


def _drop_field(sdl: str, dotted: str) -> str:
    """The SDL without one field of one type (with its description and arguments)."""
    type_name, field_name = dotted.split(".")
    start = re.search(rf"^type {type_name} .*\{{$", sdl, flags=re.M)
    assert start, dotted
    body_end = sdl.index("\n}", start.end())
    body = sdl[start.end() : body_end]
    # a field is its (optional) docstring, then `  name(…): Type` up to the next field's start
    pattern = re.compile(rf'(\n  """(?:(?!""").)*"""\s*)?\n  {field_name}(\(.*?\n  \))?: [^\n]+', flags=re.S)
    new_body, n = pattern.subn("", body, count=1)
    assert n == 1, dotted
    return sdl[: start.end()] + new_body + sdl[body_end:]
