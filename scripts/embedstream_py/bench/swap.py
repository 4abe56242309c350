"""Benchmark: hot swap of the file `embedstream serve` is serving (issue 9).

Run from the repository root, with the benchmark venv and a release build,
on a quiet machine (the figures are latencies and a throughput ratio):

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r scripts/requirements-bench.txt
    cargo build --release          # CARGO_TARGET_DIR is honoured, or set EMBEDSTREAM_BIN
    PYTHONPATH=scripts .venv-bench/bin/python -m embedstream_py.bench.swap \
        [--rows 1418970] [--dim 384] [--trials 10] [--runs 3] [--parts a,b]

Data (made or reused in bench-data/, gitignored, by embedstream_py.bench.make_arrow):
two files of --rows x --dim with different keys (A: the key rule from row 0,
B: from row 10^9), so the first row of a stream tells which generation
answered. The served path is bench-data/swap-live.arrow; each swap renames
a hard link of A or B onto it (an atomic rename, as `embedstream convert -o
LIVE --force` does; no data is copied between trials).

(a) Swap latency: a poller opens StreamEmbedding calls back to back (chunk
    1, the first message only) and records when the first row of the new
    generation arrives; latency = that time - the time just before the
    rename. --trials swaps, alternating A/B. p50/p90/max. Target p50 <= 250 ms
    on the 1.4M-row file. What the server spends validating (its
    `load_ms` log field: open + every key + every batch decoded) is
    reported beside it.
(b) RowChunk throughput during a swap: one full stream of A (chunk 300, the
    grpcio client of embedstream_py.bench.stream_client, every chunk decoded),
    --runs times without a swap and --runs times with a rename of B onto the
    served path --swap-after seconds after the client starts (the stream must
    still deliver every row of A; a NOTE says when the rename did not fall
    between the call and its end, e.g. on a small file). rows/s medians and
    their ratio.

Results are printed and saved to bench-data/results-swap-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from embedstream_py.bench import common as C
from embedstream_py.datafile import GRPC_OPTIONS
from embedstream_py.stubs import stubs

B_FIRST_ROW = 10**9


def first_key(first_row: int) -> str:
    """The key text of a bench.make_arrow file's first row (its keys_for rule)."""
    from embedstream_py.bench.make_arrow import keys_for

    return str(uuid.UUID(bytes=keys_for(first_row, 1)[0].tobytes()))


def ensure_file(rows: int, dim: int, first_row: int, tag: str) -> Path:
    out = C.DATA_DIR / f"swap-{tag}-{rows}x{dim}.arrow"
    if not out.exists():
        C.DATA_DIR.mkdir(exist_ok=True)
        subprocess.run(C.py_m("bench.make_arrow", "--rows", rows, "--dim", dim,
                              "--first-row", first_row, "--out", out),
                       check=True, env=C.child_env())
    return out


def put(src: Path, live: Path) -> float:
    """Rename a hard link of `src` onto `live`; returns the time just before the rename."""
    tmp = live.with_name(live.name + ".incoming")
    if tmp.exists():
        tmp.unlink()
    os.link(src, tmp)
    t = time.perf_counter()
    os.rename(tmp, live)
    return t


class Poller:
    """Back-to-back StreamEmbedding calls reading one chunk of 1 row; records
    (time, first row id) of each answer."""

    def __init__(self, addr: str):
        import grpc

        pb2, pb2_grpc = stubs()
        self.pb2 = pb2
        self.channel = grpc.insecure_channel(addr, options=GRPC_OPTIONS)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = pb2_grpc.EmbeddingStreamServiceStub(self.channel)

    def first_id(self) -> str | None:
        call = self.stub.StreamEmbedding(
            self.pb2.StreamEmbeddingRequest(last_processed_uuid="", chunk_size=1), timeout=30)
        try:
            for chunk in call:
                return chunk.rows[0].id if chunk.rows else None
        except Exception:  # UNAVAILABLE while no generation is served, etc.
            return None
        finally:
            call.cancel()
        return None

    def wait_for(self, want: str, since: float, timeout: float = 60.0) -> float:
        """Seconds from `since` until a call's first row is `want`."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.first_id() == want:
                return time.perf_counter() - since
        raise RuntimeError(f"the new generation ({want}) never answered within {timeout:.0f}s")


def load_ms(log: str) -> list[float]:
    return [float(m) for m in re.findall(r'trigger="the file changed" load_ms=([\d.]+)', log)]


def full_stream(addr: str) -> dict:
    out = subprocess.run(C.py_m("bench.stream_client", "--addr", addr, "--chunk", 300, "full"),
                         capture_output=True, text=True, check=True, env=C.child_env())
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_418_970)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--swap-after", type=float, default=1.0)
    ap.add_argument("--parts", default="a,b")
    a = ap.parse_args()
    C.require_venv()
    parts = set(a.parts.split(","))
    binary = C.embedstream_bin()
    info = C.machine_report()

    file_a = ensure_file(a.rows, a.dim, 0, "a")
    file_b = ensure_file(a.rows, a.dim, B_FIRST_ROW, "b")
    key_a, key_b = first_key(0), first_key(B_FIRST_ROW)
    live = C.DATA_DIR / "swap-live.arrow"
    put(file_a, live)
    port = C.free_port()
    results: dict = {"machine": info, "rows": a.rows, "dim": a.dim,
                     "loadavg_before": C.loadavg()}
    cmd = [str(binary), "serve", "--data", str(live), "--host", "127.0.0.1", "--port", str(port)]
    with C.Server("embedstream", cmd, port, env={"LOG_LEVEL": "INFO", "NO_COLOR": "1"}) as server:
        poller = Poller(server.addr)
        if poller.first_id() != key_a:
            sys.exit("the server does not serve file A first")
        current = key_a
        if "a" in parts:
            lat = []
            for i in range(a.trials):
                src, want = (file_b, key_b) if current == key_a else (file_a, key_a)
                t0 = put(src, live)
                lat.append(poller.wait_for(want, t0) * 1e3)
                current = want
                time.sleep(1.0)
            v = load_ms(server.log_path.read_text(errors="replace"))
            p50 = C.pct(lat, 50)
            results["swap_latency_ms"] = lat
            results["server_load_ms"] = v
            print(f"\n(a) swap latency, rename -> first chunk of the new generation, {a.trials} swaps "
                  f"of {a.rows:,} x {a.dim}")
            print(C.table([[f"{p50:.0f}", f"{C.pct(lat, 90):.0f}", f"{max(lat):.0f}",
                            f"{C.median(v):.0f}" if v else "?",
                            C.verdict(p50 <= 250, p50)]],
                          ["p50 ms", "p90 ms", "max ms", "server load ms (median)",
                           "target p50 <= 250 ms"]))
        if "b" in parts:
            if current != key_a:
                t0 = put(file_a, live)
                poller.wait_for(key_a, t0)
                current = key_a
            full_stream(server.addr)  # warm-up
            plain, swapped, mid = [], [], []
            for _ in range(a.runs):
                r = full_stream(server.addr)
                plain.append(r["rows"] / r["seconds"])
            for _ in range(a.runs):
                box: dict = {}
                th = threading.Thread(target=lambda: box.update(full_stream(server.addr)))
                th.start()
                time.sleep(a.swap_after)
                at = time.time()
                t0 = put(file_b, live)
                poller.wait_for(key_b, t0)
                th.join()
                # Else the figure is not "during a swap" (the stream had not
                # started yet, or had ended).
                mid.append(box.get("started_at", at) < at < box.get("ended_at", at))
                if box.get("rows") != a.rows:
                    sys.exit(f"the stream running across the swap got {box.get('rows')} rows, "
                             f"not the old file's {a.rows}")
                swapped.append(box["rows"] / box["seconds"])
                t0 = put(file_a, live)
                poller.wait_for(key_a, t0)
                time.sleep(1.0)
            results["rows_per_s_plain"] = plain
            results["rows_per_s_during_swap"] = swapped
            results["stream_running_at_swap"] = mid
            print(f"\n(b) RowChunk throughput of one full stream (chunk 300), {a.runs} runs each")
            print(C.table([[f"{C.median(plain):,.0f}", f"{C.median(swapped):,.0f}",
                            f"{C.ratio(C.median(swapped), C.median(plain)):.2f}"]],
                          ["rows/s without a swap", "rows/s with a swap mid-stream", "ratio"]))
            if not all(mid):
                print(f"  NOTE: in {mid.count(False)} of {a.runs} runs the rename ({a.swap_after} s "
                      "after the client started) fell outside the stream: not a swap "
                      "mid-stream; use more --rows or another --swap-after")
    results["loadavg_after"] = C.loadavg()
    C.save_results("swap", results)


if __name__ == "__main__":
    main()
