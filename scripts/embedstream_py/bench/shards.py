"""Benchmark: data set conversion in parallel, and start-up of a 100-shard data set (issue 12).

Run from the repository root, with the benchmark venv and a release build:

    PYTHONPATH=scripts .venv-bench/bin/python -m embedstream_py.bench.shards \\
        [--parts a,b] [--rows 60000] [--startup-rows 141897] [--shards 100] [--runs 3]
        [--out-root DIR]

a) `convert P0.pkl P1.pkl P2.pkl P3.pkl -o DIR/ --force --key-seed 1 --key-time T
   --jobs J` with J = 2 (the default on 2 cores) against J = 1 (sequential),
   4 pickles of --rows x 384 written by pandas (create_test_data's reference
   layout), each run under /usr/bin/time -v in a fresh process; one warm-up,
   then --runs runs interleaved (2,1,2,1,…); median wall, CPU and peak RSS;
   target: jobs 1 / jobs 2 >= 1.7x. The outputs go under --out-root
   (default bench-data/; /dev/shm takes the disk's fsync out). Both
   outputs' manifest.json (with every shard's SHA-256) are compared: the
   same bytes either way.
b) start-up: one pickle of --startup-rows rows converted to a single file and
   to a data set of --shards shards (`--shard-rows ceil(rows / shards)`); the
   time from just before the process is spawned to the first answered RPC (the
   port polled by TCP connects every 0.5 ms, then a Flight ListFlights on a
   fresh client, which must succeed), and the `startup_ms`
   the server logs; one warm-up, then --runs runs of each, interleaved.
"""
from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from embedstream_py.bench import common as C

KEY_TIME = "2026-11-30T12:00:00Z"


def pickles(n: int, rows: int, dim: int) -> list[Path]:
    from embedstream_py.create_test_data import write_reference_like

    base = C.DATA_DIR / f"shards-{rows}x{dim}"
    base.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = base / f"part-{i}.pkl"
        if not p.exists():
            print(f"writing {p} ...", flush=True)
            write_reference_like(p, rows, dim, seed=700 + i, companies=3000, id_prefix=f"s{i}")
        out.append(p)
    return out


def part_a(exe: Path, a) -> dict:
    ins = pickles(4, a.rows, a.dim)
    mb = sum(p.stat().st_size for p in ins) / 1e6
    outs = {j: Path(a.out_root) / f"shards-out-jobs{j}" for j in (1, 2)}

    def cmd(j):
        return [str(exe), "convert", *map(str, ins), "-o", f"{outs[j]}/", "--force",
                "--no-progress", "--key-seed", "1", "--key-time", KEY_TIME, "--jobs", str(j)]

    print(f"\n== a) convert 4 pickles ({mb:,.0f} MB): --jobs 2 against --jobs 1; "
          f"load {C.loadavg()}")
    for j in (2, 1):
        print("  " + " ".join(cmd(j)))
        C.time_v(cmd(j))  # warm-up
    res = {1: [], 2: []}
    for run in range(a.runs):
        for j in (2, 1):
            r = C.time_v(cmd(j))
            res[j].append(r)
            print(f"  run {run + 1} jobs {j}: {r['wall_s']:.2f} s, CPU "
                  f"{(r['user_s'] or 0) + (r['sys_s'] or 0):.2f} s, "
                  f"{r['peak_rss_mib']:.0f} MiB", flush=True)
    same = (outs[1] / "manifest.json").read_bytes() == (outs[2] / "manifest.json").read_bytes()
    med = {j: C.median([r["wall_s"] for r in res[j]]) for j in (1, 2)}
    cpu = {j: C.median([(r["user_s"] or 0) + (r["sys_s"] or 0) for r in res[j]]) for j in (1, 2)}
    rss = {j: C.median([r["peak_rss_mib"] for r in res[j]]) for j in (1, 2)}
    speed = C.ratio(med[1], med[2])
    print(C.table([[f"--jobs {j}", f"{med[j]:.2f}", f"{cpu[j]:.2f}", f"{rss[j]:.0f}",
                    f"{mb / med[j]:.0f}"] for j in (1, 2)],
                  ["", "wall s", "CPU s", "peak RSS MiB", "MB/s of pickle"]))
    print(f"  jobs 1 / jobs 2 = {speed:.2f}x (target >= 1.7x: {C.verdict(speed >= 1.7, speed)}); "
          f"manifests (every shard's SHA-256) identical: {same}; load {C.loadavg()}")
    for j in (1, 2):
        subprocess.run(["rm", "-rf", str(outs[j])], check=True)
    return {"pickles_mb": mb, "wall": med, "cpu": cpu, "rss": rss, "speedup": speed,
            "same_bytes": same, "runs": {j: [r["wall_s"] for r in res[j]] for j in (1, 2)}}


def first_rpc_ms(exe: Path, data: Path, timeout: float = 120.0) -> tuple[float, float | None]:
    """Spawn → first successful ListFlights (ms), and the logged startup_ms."""
    import pyarrow as pa
    import pyarrow.flight as flight

    port = C.free_port()
    env = dict(os.environ, LOG_LEVEL="INFO", NO_COLOR="1")
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(exe), "serve", "--data", str(data), "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
        try:
            opts = flight.FlightCallOptions(timeout=5)
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"serve exited {proc.returncode}: "
                                       f"{log.read().decode(errors='replace')[-2000:]}")
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"no answer after {timeout:.0f} s")
                # A TCP probe first: a gRPC client whose first connect is
                # refused backs off (~100 ms+), which would be measured instead.
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) != 0:
                        time.sleep(0.0005)
                        continue
                client = flight.connect(f"grpc://127.0.0.1:{port}")
                try:
                    list(client.list_flights(options=opts))
                    ready = time.perf_counter() - t0
                    break
                except (flight.FlightError, pa.ArrowException, OSError):
                    time.sleep(0.0005)
                finally:
                    client.close()
            logged = C.logged_startup_ms(log)
        finally:
            C.stop_process(proc)
    return ready * 1e3, logged


def part_b(exe: Path, a) -> dict:
    from embedstream_py.create_test_data import write_reference_like

    base = C.DATA_DIR / f"startup-{a.startup_rows}x{a.dim}"
    base.mkdir(parents=True, exist_ok=True)
    pkl = base / "one.pkl"
    if not pkl.exists():
        print(f"writing {pkl} ...", flush=True)
        write_reference_like(pkl, a.startup_rows, a.dim, seed=900, companies=3000)
    single = base / "single.arrow"
    shard_rows = math.ceil(a.startup_rows / a.shards)
    many = base / f"set-{a.shards}"
    if not single.exists():
        subprocess.run([str(exe), "convert", str(pkl), "-o", str(single), "--no-progress"],
                       check=True)
    if not (many / "manifest.json").exists():
        subprocess.run([str(exe), "convert", str(pkl), "-o", f"{many}/", "--shard-rows",
                        str(shard_rows), "--no-progress"], check=True)
    n_shards = len(list(many.glob("shard-*.arrow")))
    print(f"\n== b) start-up to the first answered RPC: {a.startup_rows:,} rows as one file "
          f"against {n_shards} shards (--shard-rows {shard_rows}); load {C.loadavg()}")
    cases = {"single file": single, f"{n_shards} shards": many}
    for d in cases.values():
        first_rpc_ms(exe, d)  # warm-up
    res = {k: [] for k in cases}
    for _ in range(a.runs):
        for k, d in cases.items():
            res[k].append(first_rpc_ms(exe, d))
    rows = []
    out = {}
    for k in cases:
        ready = [r for r, _ in res[k]]
        logged = [x for _, x in res[k] if x is not None]
        out[k] = {"ready_ms": ready, "logged_ms": logged}
        rows.append([k, f"{C.median(ready):.1f}", f"{min(ready):.1f}-{max(ready):.1f}",
                     f"{C.median(logged):.1f}" if logged else "-"])
    print(C.table(rows, ["data", "first RPC ms (median)", "range", "logged startup_ms"]))
    keys = list(cases)
    r = C.ratio(C.median(out[keys[1]]["ready_ms"]), C.median(out[keys[0]]["ready_ms"]))
    print(f"  {keys[1]} / single file = {r:.2f}x; load {C.loadavg()}")
    out["ratio"] = r
    out["shards"] = n_shards
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--parts", default="a,b")
    ap.add_argument("--rows", type=int, default=60_000, help="rows per pickle (part a)")
    ap.add_argument("--dim", type=int, default=C.REF_DIM)
    ap.add_argument("--startup-rows", type=int, default=C.REF_ROWS)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out-root", default=str(C.DATA_DIR),
                    help="where part a writes (e.g. /dev/shm: tmpfs, fsync costs nothing)")
    a = ap.parse_args()
    C.require_venv()
    exe = C.embedstream_bin()
    machine = C.machine_report()
    results = {"machine": machine, "args": vars(a)}
    parts = a.parts.split(",")
    if "a" in parts:
        results["a"] = part_a(exe, a)
    if "b" in parts:
        results["b"] = part_b(exe, a)
    C.save_results("shards", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
