"""Benchmark: aggregate Flight DoGet throughput with 1, 2 and 3 replicas (issue 12).

Run from the repository root, with the benchmark venv and a release build:

    PYTHONPATH=scripts .venv-bench/bin/python -m embedstream_py.bench.replicas \\
        [--pickles 3] [--rows 60000] [--partition-rows 10000] [--readers 6] [--runs 5] [--passes 5]

Data (built once into bench-data/replicas-*, gitignored): --pickles pickles
of --rows x 384 written by pandas (create_test_data's reference layout,
distinct ids), converted with `convert A.pkl B.pkl … -o DIR/ --shard-rows
2*--partition-rows`. For R = 1, 2, 3, R replicas `serve --data DIR --host
127.0.0.{2..R+1} --port P --advertise <their R URIs> --partition-rows N`
(embedstream_py.replica_set), then one client process (this one): GetFlightInfo,
then every endpoint DoGet on --readers threads, endpoint i from its location
i mod R, batches counted and dropped. One warm-up read (page cache), then
--runs runs of --passes whole reads per R, interleaved (1,2,3,1,2,3,…),
medians reported: GB/s of
Arrow buffers (RecordBatch.nbytes, 1 GB = 1e9 B), rows/s, and the CPU
seconds of the servers (all replicas, /proc/PID/stat) and of the client
(getrusage) per read, as a share of the machine's cores × wall time: what
limits the aggregate on a machine with few cores. Ratios against R = 1.
No thresholds: the issue asks for figures and what limits them.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from embedstream_py.bench import common as C
from embedstream_py.replica_set import LOOPBACKS, ReplicaSet

TICKS = os.sysconf("SC_CLK_TCK")


def make_dataset(exe: Path, pickles: int, rows: int, dim: int, shard_rows: int) -> Path:
    from embedstream_py.create_test_data import write_reference_like

    base = C.DATA_DIR / f"replicas-{pickles}x{rows}x{dim}"
    out = base / f"set-{shard_rows}"
    if (out / "manifest.json").exists():
        print(f"reusing {out}")
        return out
    base.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(pickles):
        p = base / f"part-{i}.pkl"
        if not p.exists():
            print(f"writing {p} ...", flush=True)
            write_reference_like(p, rows, dim, seed=500 + i, companies=3000, id_prefix=f"p{i}")
        paths.append(p)
    cmd = [str(exe), "convert", *map(str, paths), "-o", f"{out}/", "--shard-rows",
           str(shard_rows), "--no-progress"]
    print("converting:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def read_all(uris: list[str], readers: int) -> dict:
    """Every endpoint, in parallel, round robin over `uris`; counts only."""
    import pyarrow.flight as flight

    from embedstream_py.replicas import flight_info

    info = flight_info(uris[:1])
    eps = list(info.endpoints)
    lock = threading.Lock()
    tot = {"rows": 0, "bytes": 0}

    def one(i: int):
        ep = eps[i]
        locs = [loc.uri.decode() for loc in ep.locations] or uris
        client = flight.connect(locs[i % len(locs)])
        try:
            rows = nbytes = 0
            for chunk in client.do_get(ep.ticket):
                rows += chunk.data.num_rows
                nbytes += chunk.data.nbytes
        finally:
            client.close()
        with lock:
            tot["rows"] += rows
            tot["bytes"] += nbytes

    with ThreadPoolExecutor(max_workers=readers) as pool:
        list(pool.map(one, range(len(eps))))
    if tot["rows"] != info.total_records:
        raise RuntimeError(f"read {tot['rows']} rows, the flight has {info.total_records}")
    return {"endpoints": len(eps), **tot}


def measure(rs: ReplicaSet, readers: int, passes: int) -> dict:
    pids = [p.pid for p in rs.procs]
    s0 = sum(cpu_seconds(p) for p in pids)
    c0 = client_cpu()
    t0 = time.perf_counter()
    got = {"rows": 0, "bytes": 0}
    for _ in range(passes):
        one = read_all(rs.uris, readers)
        got = {"endpoints": one["endpoints"], "rows": got["rows"] + one["rows"],
               "bytes": got["bytes"] + one["bytes"]}
    wall = time.perf_counter() - t0
    return {**got, "wall_s": wall, "server_cpu_s": sum(cpu_seconds(p) for p in pids) - s0,
            "client_cpu_s": client_cpu() - c0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--pickles", type=int, default=3)
    ap.add_argument("--rows", type=int, default=60_000, help="rows per pickle")
    ap.add_argument("--dim", type=int, default=C.REF_DIM)
    ap.add_argument("--partition-rows", type=int, default=10_000)
    ap.add_argument("--readers", type=int, default=6, help="client threads")
    ap.add_argument("--replicas", default="1,2,3")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--passes", type=int, default=5, help="whole-set reads per measurement")
    a = ap.parse_args()
    C.require_venv()
    exe = C.embedstream_bin()
    machine = C.machine_report()
    data = make_dataset(exe, a.pickles, a.rows, a.dim, 2 * a.partition_rows)
    size = sum(f.stat().st_size for f in data.glob("*.arrow"))
    counts = [int(x) for x in a.replicas.split(",")]
    print(f"data set {data}: {size / 1e6:,.0f} MB on disk; readers {a.readers}; "
          f"--partition-rows {a.partition_rows}; load before: {C.loadavg()}", flush=True)
    results: dict[int, list[dict]] = {r: [] for r in counts}
    sets = {}
    try:
        for r in counts:
            sets[r] = ReplicaSet(exe, data, hosts=LOOPBACKS[:r],
                                 extra=["--partition-rows", a.partition_rows]).__enter__()
        for r in counts:  # warm-up: page cache, connections
            read_all(sets[r].uris, a.readers)
        for run in range(a.runs):
            for r in counts:
                m = measure(sets[r], a.readers, a.passes)
                results[r].append(m)
                print(f"  run {run + 1} R={r}: {m['bytes'] / m['wall_s'] / 1e9:.2f} GB/s, "
                      f"{m['rows'] / m['wall_s']:,.0f} rows/s, servers {m['server_cpu_s']:.2f} "
                      f"CPU-s, client {m['client_cpu_s']:.2f} CPU-s in {m['wall_s']:.2f} s",
                      flush=True)
    finally:
        for rs in sets.values():
            rs.close()
    cores = os.cpu_count() or 1
    rows_out = []
    base = None
    summary = {}
    for r in counts:
        ms = results[r]
        wall = C.median([m["wall_s"] for m in ms])
        gbs = C.median([m["bytes"] / m["wall_s"] / 1e9 for m in ms])
        rps = C.median([m["rows"] / m["wall_s"] for m in ms])
        srv = C.median([m["server_cpu_s"] / (m["wall_s"] * cores) for m in ms])
        cli = C.median([m["client_cpu_s"] / (m["wall_s"] * cores) for m in ms])
        srv_gb = C.median([m["server_cpu_s"] / (m["bytes"] / 1e9) for m in ms])
        cli_gb = C.median([m["client_cpu_s"] / (m["bytes"] / 1e9) for m in ms])
        base = base or gbs
        summary[r] = {"gb_s": gbs, "rows_s": rps, "wall_s": wall, "server_cpu_share": srv,
                      "client_cpu_share": cli, "server_cpu_s_per_gb": srv_gb,
                      "client_cpu_s_per_gb": cli_gb, "endpoints": ms[0]["endpoints"],
                      "bytes": ms[0]["bytes"]}
        rows_out.append([r, ms[0]["endpoints"], f"{gbs:.2f}", f"{rps:,.0f}",
                         f"{C.ratio(gbs, base):.2f}x", f"{srv * 100:.0f}%", f"{cli * 100:.0f}%",
                         f"{(srv + cli) * 100:.0f}%", f"{srv_gb:.2f}", f"{cli_gb:.2f}"])
    print(f"\n== aggregate Flight DoGet, {a.readers} readers, medians of {a.runs} runs "
          f"({summary[counts[0]]['bytes'] / a.passes / 1e6:,.0f} MB of Arrow buffers per read, "
          f"{a.passes} reads per run; "
          f"CPU as a share of {cores} cores x wall)")
    print(C.table(rows_out, ["replicas", "endpoints", "GB/s", "rows/s", "vs 1", "servers CPU",
                             "client CPU", "total CPU", "servers CPU-s/GB",
                             "client CPU-s/GB"]))
    print(f"load after: {C.loadavg()}")
    C.save_results("replicas", {"machine": machine, "args": vars(a), "data": str(data),
                                "data_bytes": size, "runs": results, "summary": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
