"""Shared helpers of the benchmarks (embedstream_py.bench.convert, .serve, .upload).

Everything here runs inside the benchmark venv (.venv-bench, see
scripts/requirements-bench.txt). Nothing here has a timing threshold: the
scripts print figures and ratios, and label targets as met or missed.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from embedstream_py import REPO, child_env, module_cmd

DATA_DIR = REPO / "bench-data"
VENV = REPO / ".venv-bench"
VENV_PY = VENV / "bin" / "python"
PY = sys.executable

# The realistic reference data set's shape (batch-server.md).
REF_ROWS = 141_897
REF_DIM = 384


def py_m(module: str, *args) -> list[str]:
    """argv of `python -m embedstream_py.<module> ARGS` in this venv (the
    helpers below run every child with scripts/ on PYTHONPATH)."""
    return module_cmd(module, *args, python=PY)


def require_venv() -> None:
    """Refuse to run outside the documented venv, with the command to make it."""
    try:
        import grpc  # noqa: F401
        import pyarrow  # noqa: F401
        import pandas  # noqa: F401
    except ImportError as e:
        sys.exit(
            f"missing Python package ({e}). Make the benchmark venv and run with it:\n"
            f"  python3 -m venv {VENV} && {VENV}/bin/pip install -r scripts/requirements-bench.txt\n"
            f"  PYTHONPATH=scripts {VENV_PY} -m "
            f"{getattr(sys.modules['__main__'].__spec__, 'name', sys.argv[0])}"
        )


def embedstream_bin() -> Path:
    """The release binary: CARGO_TARGET_DIR/release/embedstream or target/release."""
    env = os.environ.get("EMBEDSTREAM_BIN")
    if env:
        return Path(env)
    td = os.environ.get("CARGO_TARGET_DIR")
    cands = ([Path(td) / "release" / "embedstream"] if td else []) + [
        REPO / "target" / "release" / "embedstream"
    ]
    for c in cands:
        if c.exists():
            return c
    sys.exit(
        "no release binary: build it with `cargo build --release` "
        "(or set EMBEDSTREAM_BIN / CARGO_TARGET_DIR); looked at "
        + ", ".join(str(c) for c in cands)
    )


def _run_text(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:  # informational only
        return f"<{e}>"


def machine_report(extra_versions: dict[str, str] | None = None) -> dict:
    """nproc, CPU model, memory, kernel and the versions in use; printed at the top."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_kb = int(m.group(1)) if m else 0
    except OSError:
        pass
    info = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    try:
        import grpc
        import numpy
        import pandas
        import pyarrow

        info.update(
            pandas=pandas.__version__,
            numpy=numpy.__version__,
            pyarrow=pyarrow.__version__,
            grpcio=grpc.__version__,
        )
        import google.protobuf

        info["protobuf"] = google.protobuf.__version__
    except ImportError:
        pass
    b = None
    try:
        b = embedstream_bin()
    except SystemExit:
        pass
    if b:
        info["embedstream"] = _run_text([str(b), "--version"])
        info["embedstream_bin"] = str(b)
    info["git"] = _run_text(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"])[:100]
    if extra_versions:
        info.update(extra_versions)
    print("== machine and versions")
    for k, v in info.items():
        print(f"  {k}: {v}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"  env {var}={os.environ[var]}")
    print(flush=True)
    return info


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Wait until 127.0.0.1:port accepts connections (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def logged_startup_ms(log, wait: float = 5.0) -> float | None:
    """The `startup_ms=` a server wrote to `log` (an open binary file), waiting
    up to `wait` s for the line; None if it never came."""
    deadline = time.perf_counter() + wait
    while time.perf_counter() < deadline:
        log.seek(0)
        m = re.search(rb"startup_ms=([0-9.]+)", log.read())
        if m:
            return float(m.group(1))
        time.sleep(0.01)
    return None


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout` s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


    """A server subprocess on 127.0.0.1 with an RSS sampler; stops on exit."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict | None = None,
                 log: Path | None = None, ready_timeout: float = 120.0):
        self.name = name
        self.cmd = cmd
        self.port = port
        self.log_path = log or Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=child_env(env), start_new_session=True)
        try:
            wait_port(port, self.proc, ready_timeout)
        except Exception:
            self.stop()
            print(f"--- {name} log ({self.log_path}):\n{self.log_tail()}")
            raise

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / RssAnon / RssFile / RssShmem / VmHWM of a process, in KiB."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[k] = int(v.split()[0])
    except (OSError, ValueError):
        pass
    return out


class RssSampler:
    """Samples /proc/PID/status every `interval` s in a thread; keeps the maxima."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.max: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            s = proc_status(self.pid)
            if s:
                self.samples += 1
                for k, v in s.items():
                    self.max[k] = max(self.max.get(k, 0), v)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()

    def mib(self, key: str) -> float:
        return self.max.get(key, 0) / 1024


def time_v(cmd: list[str], env: dict | None = None, timeout: float = 1800) -> dict:
    """Run `cmd` under /usr/bin/time -v in a fresh process; wall s, peak RSS MiB, rc."""
    with tempfile.NamedTemporaryFile(prefix="bench-time-", suffix=".txt", delete=False) as tf:
        tpath = tf.name
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", "-o", tpath] + cmd, capture_output=True,
                       env=child_env(env), timeout=timeout)
    wall = time.perf_counter() - t0
    text = Path(tpath).read_text()
    os.unlink(tpath)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    el = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    el_s = None
    if el:
        parts = [float(x) for x in el.group(1).split(":")]
        el_s = sum(x * 60 ** i for i, x in enumerate(reversed(parts)))
    user = re.search(r"User time \(seconds\): ([\d.]+)", text)
    sys_ = re.search(r"System time \(seconds\): ([\d.]+)", text)
    res = {
        "rc": p.returncode,
        "wall_s": wall,
        "time_wall_s": el_s,
        "peak_rss_mib": int(m.group(1)) / 1024 if m else float("nan"),
        "user_s": float(user.group(1)) if user else None,
        "sys_s": float(sys_.group(1)) if sys_ else None,
        "stdout": p.stdout.decode(errors="replace"),
        "stderr": p.stderr.decode(errors="replace"),
    }
    if p.returncode != 0:
        raise RuntimeError(
            f"command failed ({p.returncode}): {' '.join(cmd)}\n{res['stderr'][-3000:]}"
        )
    return res


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    """The p-th percentile (nearest rank) of xs."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def ratio(a, b):
    try:
        return a / b
    except (ZeroDivisionError, TypeError):
        return float("nan")


def verdict(ok: bool, *values) -> str:
    """"met" / "MISSED", or "not measured" when any value it rests on is NaN."""
    import math

    if any(isinstance(v, float) and math.isnan(v) for v in values):
        return "not measured"
    return "met" if ok else "MISSED"


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def table(rows: list[list], header: list[str]) -> str:
    """A Markdown table (also readable in a terminal)."""
    cells = [[str(c) for c in r] for r in [header] + rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (x + 2) for x in w) + "|")
    return "\n".join(lines)


def save_results(name: str, data: dict) -> Path:
    DATA_DIR.mkdir(exist_ok=True)
    p = DATA_DIR / f"results-{name}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    p.write_text(json.dumps(data, indent=2, default=str))
    print(f"\nresults saved to {p}")
    return p
