"""How long `embedstream serve` takes to start, per file (standard library only).

    PYTHONPATH=scripts python3 -m embedstream_py.bench.startup FILE.arrow [FILE.arrow ...] [--runs 5] [--exe PATH]

For each file, --runs times (after one warm-up run that brings the file into
the page cache): start `embedstream serve --data FILE --host 127.0.0.1 --port P`
(LOG_LEVEL=INFO) and time, from just before the process is spawned,
  ready: until 127.0.0.1:P accepts a connection (the port opens only after
         every start-up check passed);
  log:   the `startup_ms` the server logs with its "serving" line (measured
         inside the process, from the start of `Server::spawn`).
Prints the median and the range of both. The binary: --exe, else
$EMBEDSTREAM_BIN, else $CARGO_TARGET_DIR/release/embedstream, else
target/release/embedstream.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from embedstream_py.bench.common import free_port, logged_startup_ms, stop_process


def one_run(exe: str, data: Path, timeout: float = 120.0) -> tuple[float, float | None]:
    port = free_port()
    env = dict(os.environ, LOG_LEVEL="INFO", GRPC_PORT=str(port), NO_COLOR="1")
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [exe, "serve", "--data", str(data), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"serve exited with {proc.returncode}: "
                                       f"{log.read().decode(errors='replace')[-2000:]}")
                with socket.socket() as s:
                    s.settimeout(0.2)
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        ready = time.perf_counter() - t0
                        break
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"not listening after {timeout:.0f} s")
                time.sleep(0.0005)
            # The "serving" line is written right after the port opens.
            logged = logged_startup_ms(log)
        finally:
            stop_process(proc)
    return ready * 1e3, logged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--exe")
    a = ap.parse_args()
    exe = (a.exe or os.environ.get("EMBEDSTREAM_BIN")
           or str(Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "release" / "embedstream"))
    print(f"binary: {exe}")
    for f in a.files:
        one_run(exe, f)  # warm-up: page cache
        runs = [one_run(exe, f) for _ in range(a.runs)]
        ready = [r for r, _ in runs]
        logged = [l for _, l in runs if l is not None]
        size = f.stat().st_size / 2**20
        line = (f"{f.name} ({size:,.0f} MiB): ready {statistics.median(ready):.1f} ms"
                f" (min {min(ready):.1f}, max {max(ready):.1f})")
        if logged:
            line += (f"; logged startup_ms {statistics.median(logged):.1f}"
                     f" (min {min(logged):.1f}, max {max(logged):.1f})")
        print(line + f"; {a.runs} runs", flush=True)


if __name__ == "__main__":
    sys.exit(main())
