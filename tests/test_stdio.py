"""`offload serve` over stdio as a host launches it: a real subprocess, the real mcp client.

No ANTHROPIC_API_KEY (listing tools and reading the budget must not need one), logs on stderr,
and nothing but JSON-RPC on stdout (a host would drop the connection otherwise).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from emulator_fixtures import running
from helpers import CONTRACT_TOOLS, handshake, query
from offload.config.settings import shipped

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
OFFLOAD = str(VENV_BIN / "offload")
TOOLS = set(CONTRACT_TOOLS)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # Exactly what a host config would pass; the SDK adds only HOME/PATH/SHELL/TERM/USER/LOGNAME.
    return {
        "HOME": str(tmp_path),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": str(tmp_path / "ledger.db"),
        "OFFLOAD_ROOTS": str(tmp_path),
        **extra,
    }


@pytest.mark.anyio
async def test_serves_tools_without_api_key_and_honours_offload_session(tmp_path: Path) -> None:
    errlog = tmp_path / "stderr.log"
    params = StdioServerParameters(command=OFFLOAD, args=["serve"], env=_env(tmp_path, OFFLOAD_SESSION="stdio-7"))
    assert "ANTHROPIC_API_KEY" not in (params.env or {})
    with errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            status = await c.call_tool("budget_status", {"scope": "session"})
    assert names >= TOOLS
    assert not status.is_error, status
    data = status.structured_content
    assert isinstance(data, dict) and data["session"] == "stdio-7", data
    logs = errlog.read_text()
    assert "offload" in logs and "session stdio-7" in logs, logs
    assert "Traceback" not in logs
    assert (tmp_path / "ledger.db").is_file()


@pytest.mark.anyio
async def test_a_routed_call_leaves_no_per_request_line_on_stderr(tmp_path: Path) -> None:
    # The HTTP client logs each request at INFO; the host's log gets offload's own lines only.
    errlog = tmp_path / "stderr.log"
    with running() as emu:
        env = _env(tmp_path, ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=emu.url)
        params = StdioServerParameters(command=OFFLOAD, args=["serve"], env=env)
        with errlog.open("w") as err:
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
                for i in range(3):
                    result = await c.call_tool("routed_complete", {"prompt": f"say hi {i}"})
                    assert not result.is_error, result
        assert len(emu.state.calls("/v1/messages", "POST")) == 3
    logs = errlog.read_text()
    assert "on stdio: session" in logs, logs
    assert "/v1/messages" not in logs and "HTTP Request" not in logs, logs


def _read_messages(proc: subprocess.Popen[bytes], want_id: int, deadline_s: float) -> list[dict[str, Any]]:
    """Every stdout line until the response `want_id`; each line must be one JSON-RPC message."""
    assert proc.stdout is not None
    messages: list[dict[str, Any]] = []
    buffer = b""
    deadline = time.monotonic() + deadline_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.2):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                message = json.loads(line)  # a stray print() would fail right here
                assert message.get("jsonrpc") == "2.0", line
                messages.append(message)
                if message.get("id") == want_id:
                    return messages
    raise AssertionError(f"no response {want_id} within {deadline_s}s; got {messages}, partial {buffer!r}")


def test_stdout_carries_only_json_rpc(tmp_path: Path) -> None:
    requests = [*handshake("raw-test"), {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}]
    proc = subprocess.Popen(
        [OFFLOAD, "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        proc.stdin.flush()
        messages = _read_messages(proc, want_id=2, deadline_s=60)
        proc.stdin.close()
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stdout is not None and proc.stderr is not None
        rest = proc.stdout.read()
        stderr = proc.stderr.read().decode()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, stderr
    assert rest.strip() == b"", f"stdout after the protocol ended: {rest!r}"
    assert messages[0]["result"]["serverInfo"]["name"] == "offload"
    assert {t["name"] for t in messages[-1]["result"]["tools"]} >= TOOLS
    assert "on stdio: session s-" in stderr, stderr  # a minted per-process session


@pytest.mark.anyio
async def test_claude_desktop_example_config_starts_the_server(tmp_path: Path) -> None:
    config = json.loads((REPO / "claude_desktop_config.example.json").read_text())
    entry = config["mcpServers"]["offload"]
    assert (entry["command"], entry["args"]) == ("offload", ["serve"])
    placeholders = entry["env"]
    assert set(placeholders) == {"ANTHROPIC_API_KEY", "OFFLOAD_POLICY", "OFFLOAD_DB", "OFFLOAD_ROOTS"}
    real = {
        "ANTHROPIC_API_KEY": "sk-ant-test-not-used",
        "OFFLOAD_POLICY": str(shipped("default.yaml")),
        "OFFLOAD_DB": str(tmp_path / "desktop.db"),
        "OFFLOAD_ROOTS": str(tmp_path),
    }
    # `command` stays the bare name, resolved on PATH as Claude Desktop would.
    env = {**_env(tmp_path), **real}
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env)
    with (tmp_path / "stderr.log").open("w") as err:
        async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
            names = {t.name for t in (await c.list_tools()).tools}
    assert names >= TOOLS
    assert (tmp_path / "desktop.db").is_file()


def _serve(tmp_path: Path, stdin: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [OFFLOAD, "serve"],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path),
        cwd=tmp_path,
    )


def test_a_big_message_and_calls_in_flight_together_cross_the_pipes_whole(tmp_path: Path) -> None:
    # The loop-driven pipes (offload/mcp/stdio.py): a 6 MB request line arrives in many reads,
    # and answers to calls sent together come back as whole lines, each once.
    rows = [{"id": i, "name": f"row {i}", "note": "x" * 40} for i in range(90_000)]
    big = json.dumps({"rows": rows})
    assert len(big) > 6_000_000
    calls = [
        {
            "jsonrpc": "2.0",
            "id": 10,
            "method": "tools/call",
            "params": {"name": "trim_result", "arguments": {"content": big, "max_tokens": 200}},
        },
        *(
            {
                "jsonrpc": "2.0",
                "id": 11 + i,
                "method": "tools/call",
                "params": {"name": "budget_status", "arguments": {}},
            }
            for i in range(4)
        ),
    ]
    with _serve(tmp_path, subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in [*handshake("pipes"), *calls]))
        proc.stdin.flush()
        answers: dict[int, dict[str, Any]] = {}
        buffer, deadline = b"", time.monotonic() + 120
        while len(answers) < len(calls) and time.monotonic() < deadline:
            chunk = os.read(proc.stdout.fileno(), 1 << 20)
            if not chunk:
                break
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                message = json.loads(line)  # whole lines only: a torn frame would not parse
                if message.get("id", 0) >= 10:
                    assert message["id"] not in answers, message
                    answers[message["id"]] = message
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    assert sorted(answers) == [10, 11, 12, 13, 14]
    trimmed = answers[10]["result"]
    assert not trimmed.get("isError"), trimmed
    assert len(json.dumps(trimmed)) < 20_000  # the 6 MB came in whole and was trimmed


def test_a_garbled_line_is_passed_over_and_the_session_serves_on(tmp_path: Path) -> None:
    # The loop's own reader parses each line as the SDK's does: a line that is not JSON-RPC (or not
    # UTF-8) is reported to the dispatcher and skipped, not fatal; the next request is answered.
    # A string with a bad byte is read with U+FFFD in its place, as the SDK's text wrapper reads it.
    status = {"jsonrpc": "2.0", "id": 5, "method": "tools/call"}
    status["params"] = {"name": "trim_result", "arguments": {"content": "caf\u00e9 \\xff", "max_tokens": 50}}
    lines = [
        *(json.dumps(r).encode() for r in handshake("garbled")),
        b"{not json",
        b'{"jsonrpc": "2.0", "id": 3, "method": 7}',
        b'{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "trim_result", '
        b'"arguments": {"content": "bad \xff byte", "max_tokens": 50}}}',
        json.dumps(status).encode(),
    ]
    with _serve(tmp_path, subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(b"\n".join(lines) + b"\n")
        proc.stdin.flush()
        messages = _read_messages(proc, want_id=5, deadline_s=60)
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()
    by_id = {m.get("id"): m for m in messages}
    assert 3 not in by_id  # not a request: nothing to answer, as with the SDK's transport
    assert "bad \ufffd byte" in json.dumps(by_id[4]["result"], ensure_ascii=False)
    assert not by_id[5]["result"].get("isError"), by_id[5]


def test_a_host_that_stops_reading_loses_its_answer_not_the_bill(tmp_path: Path) -> None:
    # The host closes its end of stdout while a paid call is in flight: the answer cannot be
    # delivered (the dispatcher drops it, as for a closed stream), and the call is still recorded;
    # at EOF the server closes cleanly with no hold left.
    with running(faults="latency=600ms") as emu:
        with _probe_with_a_call_in_flight(tmp_path, emu, SERVE_PROBE) as proc:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            time.sleep(1.5)  # the answer came and could not be written
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
            err = proc.stderr.read().decode()
        served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
    assert "Traceback" not in err, err
    db = tmp_path / "ledger.db"
    assert len(served) == 1
    assert query(db, "SELECT COUNT(*) AS n FROM attempts")[0]["n"] == 1
    assert query(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0


def _stall_with_big_pings(proc: subprocess.Popen[bytes], n: int, *, cancel: bool) -> None:
    """Handshake, then `n` pings whose 200 KB ids fill the pipe while the host reads nothing."""
    assert proc.stdin is not None
    proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in handshake("stall")))
    proc.stdin.flush()
    _read_messages(proc, want_id=1, deadline_s=60)
    for i in range(n):
        ping = {"jsonrpc": "2.0", "id": f"{i}:" + "q" * 200_000, "method": "ping"}
        sent = [ping, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": ping["id"]}}]
        proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in (sent if cancel else sent[:1])))
    proc.stdin.flush()
    time.sleep(1.0)  # every ping answered or waiting for the host to read


def test_answers_to_requests_cancelled_behind_a_host_that_stopped_reading_are_not_sent(tmp_path: Path) -> None:
    # Answers go out one at a time: the others wait unserialized (a stalled host costs the server a
    # message each, not its JSON too), and one whose request is cancelled meanwhile is never written.
    with _serve(tmp_path, subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        _stall_with_big_pings(proc, 40, cancel=True)
        proc.stdin.close()
        got = b""
        while chunk := os.read(proc.stdout.fileno(), 1 << 20):
            got += chunk
        assert proc.wait(timeout=30) == 0
    answered = [json.loads(line) for line in got.splitlines()]
    assert 1 <= len(answered) <= 2, len(answered)  # the one being written when the host stopped reading


def test_a_host_that_closes_stdin_and_never_reads_again_does_not_keep_the_server(tmp_path: Path) -> None:
    # Answers still in the pipe at EOF get a short while to be read, then the server exits on its
    # own (it waited for the host to read them for as long as the process lived).
    with _serve(tmp_path, subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        _stall_with_big_pings(proc, 5, cancel=False)
        proc.stdin.close()
        assert proc.wait(timeout=15) == 0, proc.stderr.read().decode()


def test_a_host_that_reads_slowly_after_closing_stdin_gets_whole_lines(tmp_path: Path) -> None:
    # The close waits while the host keeps reading (not a fixed time): an answer being written when
    # stdin closed reaches a slow reader whole, never cut off mid-line.
    with _serve(tmp_path, subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in handshake("slow")))
        proc.stdin.flush()
        _read_messages(proc, want_id=1, deadline_s=60)
        pings = [{"jsonrpc": "2.0", "id": f"{i}:" + "q" * 200_000, "method": "ping"} for i in range(4)]
        proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in pings))
        proc.stdin.close()
        got = b""
        while chunk := os.read(proc.stdout.fileno(), 8192):
            got += chunk
            time.sleep(0.05)  # about 160 KB/s: each answer takes over a second to read
        assert proc.wait(timeout=60) == 0
    assert got.endswith(b"\n"), f"cut off mid-line after {len(got)} bytes"
    answered = [json.loads(line) for line in got.splitlines()]
    assert answered and all(m.get("result") == {} for m in answered), [str(m)[:80] for m in answered]


def test_a_request_written_just_before_eof_is_answered(tmp_path: Path) -> None:
    # A host (or a script) that writes its last requests and closes stdin at once: the SDK's
    # dispatcher cancels whatever is still running at EOF, so the answers raced the close. EOF now
    # waits for them (the file case below is the one that lost them reliably).
    lines = [*handshake("eof"), *({"jsonrpc": "2.0", "id": 2 + i, "method": "tools/list"} for i in range(3))]
    with _serve(tmp_path, subprocess.PIPE) as proc:
        out, err = proc.communicate(b"".join(json.dumps(r).encode() + b"\n" for r in lines), timeout=60)
    assert proc.returncode == 0, err.decode()
    answered = {m.get("id") for m in map(json.loads, out.splitlines())}
    assert answered >= {1, 2, 3, 4}, (answered, err.decode()[-2000:])


def test_a_cancel_naming_no_valid_request_is_passed_over(tmp_path: Path) -> None:
    # The SDK ignores a cancel whose requestId is not a string or an integer; the wait at EOF
    # once took it for an id, and an unhashable one ({"id": 2}) ended the session.
    odd = [{"id": 2}, [1], True, None]
    cancels = [{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": r}} for r in odd]
    lines = [*handshake("odd"), *cancels, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    with _serve(tmp_path, subprocess.PIPE) as proc:
        out, err = proc.communicate(b"".join(json.dumps(r).encode() + b"\n" for r in lines), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert 2 in {m.get("id") for m in map(json.loads, out.splitlines())}, err.decode()[-2000:]


def test_a_file_on_stdin_is_served_by_the_sdks_blocking_transport(tmp_path: Path) -> None:
    # A regular file can't be driven by the loop (pipes_usable): the SDK's transport serves it. Its
    # EOF comes at once, so every request in it is answered only because EOF waits for them.
    requests = tmp_path / "requests.jsonl"
    lines = [*handshake("file"), *({"jsonrpc": "2.0", "id": 2 + i, "method": "tools/list"} for i in range(3))]
    requests.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in lines))
    for _ in range(3):
        with requests.open("rb") as stdin, _serve(tmp_path, stdin) as proc:
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        messages = {m.get("id"): m for m in map(json.loads, out.splitlines())}
        assert set(messages) >= {1, 2, 3, 4}, (set(messages), err.decode()[-2000:])
        assert {t["name"] for t in messages[4]["result"]["tools"]} >= TOOLS


def test_while_serving_fds_0_and_1_point_away_from_the_wire(tmp_path: Path) -> None:
    # A stray print, or a child process inheriting fd 1, must land on stderr, not in the protocol.
    script = (
        "import anyio, os, sys\n"
        "from mcp.server import MCPServer\n"
        "from offload.mcp import stdio\n"
        "app = MCPServer('probe')\n"
        "@app.tool()\n"
        "def shout() -> str:\n"
        "    print('stray print'); sys.stdout.flush(); os.write(1, b'stray write\\n')\n"
        "    return 'ok' if os.read(0, 10) == b'' else 'stdin not diverted'\n"
        "anyio.run(stdio.serve, app)\n"
    )
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "shout", "arguments": {}}}
    pipe = subprocess.PIPE
    with subprocess.Popen([sys.executable, "-c", script], stdin=pipe, stdout=pipe, stderr=pipe) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in [*handshake("probe"), call]))
        proc.stdin.flush()
        messages = _read_messages(proc, want_id=2, deadline_s=60)  # each stdout line must parse as JSON-RPC
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read().decode()
    result = messages[-1]["result"]
    assert result["content"][0]["text"] == "ok", result
    assert "stray print" in err and "stray write" in err


def test_one_socket_serving_both_ways_is_served_whole(tmp_path: Path) -> None:
    # inetd-style activation hands one socket as stdin and stdout: the loop's write side would take
    # arriving requests for its reader going away, so the SDK's transport serves it (pipes_usable).
    # Each request is sent after the previous answer, as a host does.
    host, server_end = socket.socketpair()
    with host, server_end:
        args, err = [OFFLOAD, "serve"], subprocess.PIPE
        wire = server_end.fileno()
        proc = subprocess.Popen(args, stdin=wire, stdout=wire, stderr=err, env=_env(tmp_path))
        with proc:
            server_end.close()
            host.settimeout(10)
            buffer = b""

            def ask(requests: list[dict[str, Any]], want: int) -> bool:
                nonlocal buffer
                host.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
                while True:
                    try:
                        chunk = host.recv(65536)
                    except TimeoutError:
                        return False
                    if not chunk:
                        return False
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    if any(json.loads(line).get("id") == want for line in lines):
                        return True

            init, *notes = handshake("inetd")
            answered = [ask([init], init["id"])]
            host.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in notes))
            answered += [ask([{"jsonrpc": "2.0", "id": 10 + i, "method": "ping"}], 10 + i) for i in range(3)]
            host.shutdown(socket.SHUT_WR)
            assert proc.wait(timeout=60) == 0
            assert proc.stderr is not None
            proc.stderr.read()
    assert answered == [True, True, True, True]


SERVE_PROBE = """
import anyio, os
from offload.config.settings import Settings
from offload.mcp import stdio
from offload.mcp.server import build_server
anyio.run(stdio.serve, build_server(Settings.from_env(os.environ)), backend_options={"use_uvloop": True})
"""

SIGTERM_PROBE = """
import anyio, os, sys
from offload.config.settings import Settings
from offload.mcp import stdio
from offload.mcp.server import build_server
if sys.argv[1] == "nonblocking":
    os.set_blocking(0, False)
    os.set_blocking(1, False)
anyio.run(stdio.serve, build_server(Settings.from_env(os.environ)))
print("after serve: blocking", os.get_blocking(0), os.get_blocking(1), file=sys.stderr)
"""


def _probe_with_a_call_in_flight(tmp_path: Path, emu: Any, script: str, *argv: str) -> subprocess.Popen[bytes]:
    """`script` serving stdio in a subprocess, handshake done and one routed call with the API."""
    env = _env(tmp_path, ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=emu.url)
    pipe = subprocess.PIPE
    args = [sys.executable, "-c", script, *argv]
    proc = subprocess.Popen(args, stdin=pipe, stdout=pipe, stderr=pipe, env=env, cwd=tmp_path)
    assert proc.stdin is not None
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
    call["params"] = {"name": "routed_complete", "arguments": {"prompt": "a slow answer"}}
    proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in [*handshake("term"), call]))
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not emu.state.calls("/v1/messages", "POST") and time.monotonic() < deadline:
        time.sleep(0.05)  # the call is with the API now
    return proc


@pytest.mark.parametrize(
    ("handed_over", "sig"), [("blocking", "SIGTERM"), ("nonblocking", "SIGTERM"), ("blocking", "SIGHUP")]
)
def test_sigterm_ends_the_session_like_eof_and_gives_the_wire_back_as_handed_over(
    tmp_path: Path, handed_over: str, sig: str
) -> None:
    # A host or launcher stopping the server: the paid call in flight is recorded, and
    # the wire's blocking mode is what it was (a wrapper such as `sh -c` shares it and reads on).
    with running(faults="latency=800ms") as emu:
        with _probe_with_a_call_in_flight(tmp_path, emu, SIGTERM_PROBE, handed_over) as proc:
            assert proc.stdin is not None and proc.stderr is not None
            proc.send_signal(getattr(signal, sig))
            messages = _read_messages(proc, want_id=2, deadline_s=60)
            assert proc.wait(timeout=60) == 0
            err = proc.stderr.read().decode()
        served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
    # As at EOF, the SDK closes the session under the call: the host hears "Connection closed",
    # and the answer the API billed is still recorded (infra/detached.py).
    assert messages[-1]["id"] == 2 and "Connection closed" in json.dumps(messages[-1]), messages[-1]
    expected = "True True" if handed_over == "blocking" else "False False"
    assert f"after serve: blocking {expected}" in err, err
    rows = query(tmp_path / "ledger.db", "SELECT COUNT(*) AS n FROM attempts")[0]["n"]
    held = query(tmp_path / "ledger.db", "SELECT COUNT(*) AS n FROM reservations")[0]["n"]
    assert (len(served), rows, held) == (1, 1, 0)


@pytest.mark.anyio
async def test_a_host_leaving_with_calls_in_flight_finds_the_server_closed_cleanly(tmp_path: Path) -> None:
    # The SDK's stdio client closes stdin, waits 2 s, then SIGTERMs (and 2 s later SIGKILLs). A
    # server that waited longer for its calls was killed with their holds left for its lease. It
    # now stops calls still unanswered after 1 s: holds released, its instance retired.
    with running(faults="latency=5s") as emu:
        env = _env(tmp_path, ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=emu.url)
        params = StdioServerParameters(command=OFFLOAD, args=["serve"], env=env)
        with (tmp_path / "stderr.log").open("w") as err:
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:

                async def slow(i: int) -> None:
                    with anyio.move_on_after(0.5):
                        await c.call_tool("routed_complete", {"prompt": f"slow {i}", "tier": "premium"})

                async with anyio.create_task_group() as tg:
                    for i in range(3):
                        tg.start_soon(slow, i)
        served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
    db = tmp_path / "ledger.db"
    assert query(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0, (tmp_path / "stderr.log").read_text()
    assert query(db, "SELECT COUNT(*) AS n FROM attempts")[0]["n"] == len(served)
    assert query(db, "SELECT COUNT(*) AS n FROM server_instances")[0]["n"] == 0  # a clean stop, not a kill
    logs = (tmp_path / "stderr.log").read_text()
    assert "stopping 3 call(s) still in flight" in logs, logs


SIGTERM_AFTER_EOF_PROBE = """
import anyio, os, sys
from offload.config.settings import Settings
from offload.infra import detached
from offload.mcp import stdio
from offload.mcp.server import build_server
detached.SHUTDOWN_GRACE_S = 60  # a close that would wait a long time for its calls
# uvloop, as `offload serve` runs: its read pipe does not report closing at EOF as asyncio's does
anyio.run(stdio.serve, build_server(Settings.from_env(os.environ)), backend_options={"use_uvloop": True})
"""


def test_sigterm_after_eof_stops_calls_in_flight_at_once_and_frees_their_holds(tmp_path: Path) -> None:
    # The host closed stdin and has lost patience: the close stops waiting, unanswered calls
    # release their holds, and the process is gone long before the close's own grace.
    with (
        running(faults="latency=20s") as emu,
        _probe_with_a_call_in_flight(tmp_path, emu, SIGTERM_AFTER_EOF_PROBE) as proc,
    ):
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.close()  # EOF: the close begins, waiting for the call
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0  # not the 60 s grace
        err = proc.stderr.read().decode()
    assert "stopping 1 call(s) still in flight" in err, err
    assert query(tmp_path / "ledger.db", "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0


def test_sigterm_on_the_sdk_transport_releases_the_holds_of_calls_in_flight(tmp_path: Path) -> None:
    # One socket both ways is served by the SDK's transport (pipes_usable); SIGTERM there killed
    # the process with its calls' holds left for its lease. It now stops the session at once.
    host, server_end = socket.socketpair()
    with host, server_end, running(faults="latency=30s") as emu:
        env = _env(tmp_path, ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=emu.url)
        wire = server_end.fileno()
        with subprocess.Popen([OFFLOAD, "serve"], stdin=wire, stdout=wire, stderr=subprocess.PIPE, env=env) as proc:
            server_end.close()
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
            call["params"] = {"name": "routed_complete", "arguments": {"prompt": "a slow answer"}}
            host.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in [*handshake("inetd"), call]))
            deadline = time.monotonic() + 30
            while not emu.state.calls("/v1/messages", "POST") and time.monotonic() < deadline:
                time.sleep(0.05)  # the call is with the API, its hold taken
            db = tmp_path / "ledger.db"
            assert query(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 1
            proc.send_signal(signal.SIGTERM)
            while query(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] and time.monotonic() < deadline + 15:
                time.sleep(0.1)
            held = query(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"]
            host.shutdown(socket.SHUT_RDWR)  # the SDK's reader thread waits on the wire until it closes
            proc.wait(timeout=30)
            assert proc.stderr is not None
            err = proc.stderr.read().decode()
    assert held == 0, err
    assert "Traceback" not in err, err
