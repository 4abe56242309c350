"""Several `embedstream serve` replicas on loopback addresses, for tests and benchmarks.

    with ReplicaSet(BIN, DIR, hosts=["127.0.0.2", "127.0.0.3", "127.0.0.4"],
                    extra=["--partition-rows", "5000"], logs=TMP) as rs:
        rs.uris          # ["grpc://127.0.0.2:P", ...], what each advertises
        rs.kill(1)       # SIGKILL the second replica (and reap it)

One port P on every address (Linux routes all of 127.0.0.0/8 to `lo`), each
replica started as

    embedstream serve --data DIR --host 127.0.0.N --port P \\
        --advertise grpc://127.0.0.2:P,grpc://127.0.0.3:P,grpc://127.0.0.4:P [EXTRA...]

Ready means: a ListFlights call answered (within `ready_timeout` seconds);
a replica that exits first raises with the tail of its log. Every replica
still running is killed (SIGKILL) and reaped on exit.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

LOOPBACKS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def free_port_on(hosts, attempts: int = 50) -> int:
    """A TCP port that is free on every address of `hosts` right now."""
    for _ in range(attempts):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
            ok = True
            for h in hosts[1:]:
                with socket.socket() as t:
                    try:
                        t.bind((h, port))
                    except OSError:
                        ok = False
                        break
        if ok:
            return port
    raise RuntimeError(f"no port free on all of {hosts} after {attempts} tries")


class ReplicaSet:
    def __init__(self, exe: Path | str, data: Path | str, hosts=LOOPBACKS, extra=(),
                 logs: Path | str | None = None, port: int | None = None,
                 ready_timeout: float = 60.0, env: dict | None = None):
        self.exe = str(exe)
        self.data = str(data)
        self.hosts = list(hosts)
        self.extra = [str(x) for x in extra]
        self.logs = Path(logs) if logs else Path(os.environ.get("TMPDIR", "/tmp"))
        self.port = port or free_port_on(self.hosts)
        self.ready_timeout = ready_timeout
        self.env = env
        self.uris = [f"grpc://{h}:{self.port}" for h in self.hosts]
        self.addrs = [f"{h}:{self.port}" for h in self.hosts]
        self.procs: list[subprocess.Popen | None] = [None] * len(self.hosts)
        self._files = []

    def command(self, i: int) -> list[str]:
        return [self.exe, "serve", "--data", self.data, "--host", self.hosts[i],
                "--port", str(self.port), "--advertise", ",".join(self.uris), *self.extra]

    def log_path(self, i: int) -> Path:
        return self.logs / f"replica-{self.hosts[i]}-{self.port}.log"

    def log_tail(self, i: int, n: int = 3000) -> str:
        try:
            return self.log_path(i).read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def start(self, i: int) -> None:
        f = open(self.log_path(i), "ab")
        self._files.append(f)
        self.procs[i] = subprocess.Popen(self.command(i), stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)

    def wait_ready(self, i: int) -> None:
        import pyarrow as pa
        import pyarrow.flight as flight

        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            p = self.procs[i]
            if p is None or p.poll() is not None:
                raise RuntimeError(f"replica {self.addrs[i]} exited "
                                   f"({None if p is None else p.returncode}) before it was "
                                   f"ready:\n{self.log_tail(i)}")
            client = flight.connect(self.uris[i])
            try:
                list(client.list_flights(options=flight.FlightCallOptions(timeout=2)))
                return
            except (flight.FlightError, pa.ArrowException, OSError) as e:
                last = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            finally:
                client.close()
            time.sleep(0.05)
        raise RuntimeError(f"replica {self.addrs[i]} not ready after {self.ready_timeout} s "
                           f"({last}):\n{self.log_tail(i)}")

    def __enter__(self):
        try:
            for i in range(len(self.hosts)):
                self.start(i)
            for i in range(len(self.hosts)):
                self.wait_ready(i)
        except BaseException:
            self.close()
            raise
        return self

    def pid(self, i: int) -> int:
        return self.procs[i].pid

    def kill(self, i: int) -> None:
        """SIGKILL replica i and reap it."""
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
        if p is not None:
            p.wait(30)

    def close(self) -> None:
        for i in range(len(self.procs)):
            try:
                self.kill(i)
            except subprocess.TimeoutExpired:  # pragma: no cover: SIGKILL is not ignorable
                pass
        for f in self._files:
            f.close()
        self._files.clear()

    def __exit__(self, *exc):
        self.close()
