"""The coalescing transport: one send() per response, and HTTP still correct.

Raw sockets against a real server on 127.0.0.1, for the cases where holding
a write until the end of the loop iteration could go wrong: a header-only
answer (HEAD), ``Expect: 100-continue`` (the interim answer must go out
before the client sends its body), pipelined requests, ``Connection:
close``, a body larger than one socket buffer, and a client that leaves.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httptools")

from rlops.serving._transport import CoalescingHttpToolsProtocol, _CoalescingTransport
from rlops.serving.server import _http_protocol
from serving_helpers import CARTPOLE_OBS, Server, config_for


@pytest.fixture(scope="module")
def server(
    artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("transport")
    with Server(config_for(artifacts["cartpole"], tmp, seed=0)) as s:
        yield s


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _act_request(extra_headers: str = "", unit: str = "u1") -> bytes:
    body = json.dumps({"observation": CARTPOLE_OBS, "unit_id": unit}).encode()
    head = (
        "POST /v1/act HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra_headers}\r\n"
    )
    return head.encode() + body


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[bytes, dict[str, str], bytes]:
    """One response from ``sock`` (``buf`` keeps bytes of the next one)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the headers"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {
        k.decode().lower(): v.decode().strip()
        for k, _, v in (line.partition(b":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    buf[:] = rest[length:]
    return lines[0], headers, rest[:length]


def test_the_server_uses_the_coalescing_protocol() -> None:
    assert _http_protocol() is CoalescingHttpToolsProtocol


class _Recorder:
    """The transport surface the coalescing wrapper uses, recording each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_in_one_loop_iteration_go_out_as_one() -> None:
    async def scenario() -> list[list[bytes]]:
        real = _Recorder()
        t = _CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        seen = []
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"{}")
        seen.append(list(real.writes))  # nothing sent yet
        await asyncio.sleep(0)
        seen.append(list(real.writes))  # one joined write
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # alone: still goes out next turn
        await asyncio.sleep(0)
        seen.append(list(real.writes))
        t.write(b"bye")
        t.close()  # close sends what is held first
        seen.append(list(real.writes))
        assert t.get_extra_info("peername") == "info:peername"
        return seen

    before, joined, single, closed = asyncio.run(scenario())
    assert before == []
    assert joined == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    assert single[-1] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert closed[-1] == b"bye"


def test_held_writes_are_dropped_on_abort_and_after_the_peer_left() -> None:
    async def scenario() -> list[bytes]:
        real = _Recorder()
        t = _CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"x")
        real.closed = True  # the peer went away before the flush
        await asyncio.sleep(0)
        return real.writes

    assert asyncio.run(scenario()) == []


def test_head_request_without_body_is_answered(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.settimeout(5)
        data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 ")
        assert b"\r\n\r\n" in data


def test_expect_100_continue_gets_the_interim_answer_before_the_body(server: Server) -> None:
    body = json.dumps({"observation": CARTPOLE_OBS, "unit_id": "u100"}).encode()
    with _connect(server) as sock:
        sock.sendall(
            b"POST /v1/act HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        sock.settimeout(5)
        interim = sock.recv(65536)  # would time out if the 100 were held back
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        buf = bytearray(interim.partition(b"\r\n\r\n")[2])
        status, _, answer = _read_response(sock, buf)
        assert status == b"HTTP/1.1 200 OK"
        assert json.loads(answer)["propensity"] > 0


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"".join(_act_request(unit=f"p{i}") for i in range(5)))
        buf = bytearray()
        for _ in range(5):
            status, headers, body = _read_response(sock, buf)
            assert status == b"HTTP/1.1 200 OK"
            assert headers["content-type"] == "application/json"
            assert "decision_id" in json.loads(body)


def test_connection_close_sends_the_answer_before_closing(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(_act_request("Connection: close\r\n"))
        buf = bytearray()
        status, _, body = _read_response(sock, buf)
        assert status == b"HTTP/1.1 200 OK"
        assert json.loads(body)["arm"] == "production"
        assert sock.recv(65536) == b""  # then the server closed


def test_large_answer_arrives_whole(server: Server) -> None:
    rows = [{"observation": CARTPOLE_OBS, "unit_id": f"b{i}"} for i in range(64)]
    body = json.dumps({"requests": rows}).encode()
    with _connect(server) as sock:
        sock.sendall(
            b"POST /v1/act HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        status, _, answer = _read_response(sock, bytearray())
        assert status == b"HTTP/1.1 200 OK"
        assert len(json.loads(answer)["decisions"]) == 64
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, doc = _read_response(sock, bytearray())
        assert status == b"HTTP/1.1 200 OK"
        assert "/v1/act" in json.loads(doc)["paths"]


def test_a_client_that_leaves_does_not_hurt_the_next(server: Server) -> None:
    for _ in range(20):
        sock = _connect(server)
        sock.sendall(_act_request())
        sock.close()  # gone before the answer
    with _connect(server) as sock:
        sock.sendall(_act_request())
        status, _, _ = _read_response(sock, bytearray())
        assert status == b"HTTP/1.1 200 OK"
