"""Start a SecantusDB test server on a free loopback port.

SecantusDB is GPL-2.0: the suite runs it as a separate process through its
``secantusd-py`` command and never imports it.

"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pymongo import MongoClient
from pymongo.errors import PyMongoError

#: The command that runs the server (installed by ``pip install secantusdb``).
COMMAND = "secantusd-py"

#: How long the server may take to answer its first ping.
START_TIMEOUT = 60.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def secantus_server(
    user: tuple[str, str] | None = None, *, test_commands: bool = False
) -> Iterator[str]:
    """Run a SecantusDB server for the duration of the block; yield its URL.

    With `user` (name, password), the server runs with ``--auth`` and that
    user holds the root role (created on a first start without auth, as
    SecantusDB asks); the URL yielded carries no credentials. With
    `test_commands`, it accepts ``configureFailPoint`` (fault injection).

    Raises
    ------
    RuntimeError
        If the command is missing or the server does not answer in time; the
        message holds the end of the server's log.

    """
    exe = shutil.which(COMMAND)
    if exe is None:
        raise RuntimeError(
            f"{COMMAND} not found: install the test dependencies "
            "(pip install -e '.[test]'), which include secantusdb"
        )
    storage = tempfile.mkdtemp(prefix="atomdb-migrate-secantus-")
    port = free_port()
    url = f"mongodb://127.0.0.1:{port}"
    log_path = os.path.join(storage, "server.log")
    data = os.path.join(storage, "data")
    args = [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", data, "--standalone"]
    if test_commands:
        args.append("--enable-test-commands")
    proc = None
    try:
        if user is not None:
            proc = _start(args, log_path)
            _wait_until_ready(url, proc, log_path)
            with MongoClient(url) as client:
                client.admin.command("createUser", user[0], pwd=user[1], roles=["root"])
            _stop(proc)
            args.append("--auth")
        proc = _start(args, log_path)
        _wait_until_ready(url, proc, log_path)
        yield url
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(storage, ignore_errors=True)


def _start(args: list[str], log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_until_ready(url: str, proc: subprocess.Popen[bytes], log_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=500)
        try:
            client.admin.command("hello")
            return
        except PyMongoError:
            time.sleep(0.2)
        finally:
            client.close()
    with open(log_path, errors="replace") as f:
        tail = f.read()[-2000:]
    raise RuntimeError(f"SecantusDB did not start at {url} (exit code {proc.poll()}):\n{tail}")


class SecantusProcess:
    """A SecantusDB server that a test may kill (SIGKILL) and start again on the
    same storage and port, as a crashed server restarts."""

    def __init__(self) -> None:
        exe = shutil.which(COMMAND)
        if exe is None:
            raise RuntimeError(f"{COMMAND} not found: install the test dependencies")
        self.storage = tempfile.mkdtemp(prefix="atomdb-migrate-secantus-")
        self.port = free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.storage, "server.log")
        self.args = [
            exe,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            os.path.join(self.storage, "data"),
            "--standalone",
            "--enable-test-commands",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _start(self.args, self.log_path)
        _wait_until_ready(self.url, self.proc, self.log_path)

    def kill(self) -> None:
        """SIGKILL: no shutdown, as a crash or a lost machine."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _stop(self.proc)
        shutil.rmtree(self.storage, ignore_errors=True)
