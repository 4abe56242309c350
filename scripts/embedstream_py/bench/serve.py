"""Benchmark 2: `embedstream serve` against its peers, same run, ratios printed.

Run from the repository root, with the benchmark venv and a release build:

    PYTHONPATH=scripts .venv-bench/bin/python -m embedstream_py.bench.serve [--parts a,b,c,d] [--runs 3]

Data (made or reused in bench-data/, gitignored): the realistic pickle
(bench-data/reference-141897x384.pkl, made by bench.convert or here) and its
conversion by `embedstream convert` (falling back to bench.peer_convert,
said in the output, when convert fails); for (c) and (d)
Arrow files written directly by bench.make_arrow (reference layout,
sorted v7 keys, embedstream metadata).

(a) Full stream, chunk 300, the same grpcio client (bench.stream_client,
    stubs compiled once from proto/embedding_stream.proto; every chunk
    decoded to messages and its rows counted) against
      embedstream serve | `py_server replay` (pre-encoded bytes: the client's
      ceiling) | `py_server legacy`, the Python data server stand-in
      (read_pickle per request, iterrows).
    rows/s (median of --runs after a warm-up; the Python server: --python-runs,
    no warm-up) and ratios. Targets: serve >= 70% of replay, >= 40x Python.
(b) pyarrow.flight do_get of the whole file from embedstream serve and from a
    pyarrow Flight server (`py_server flight`: the memory-mapped file's batches). GB/s of Arrow buffers received,
    ratio. Target >= 1.0x.
(c) Time to first chunk on a resume: --ttfc-requests calls with
    last_processed_uuid = the key of a random row in the second half, timed
    from the call to the first RowChunk, at 141,897 x 384, 1,418,970 x 384 and
    14,189,700 x 16 rows (the 14M file uses dim 16 to stay ~2 GB). p50/p99.
    Target p50 <= 5 ms, flat in n. The Python server at 141,897 rows
    (--python-ttfc-requests calls, v5 ids of rows >= 100,000) for context.
(d) RssAnon / RssFile of serve (from /proc/PID/status every 50 ms) while 8
    concurrent clients (separate processes, --raw: bytes counted, not decoded,
    so the clients stay cheap) stream a 700,000 x 384 file (~1.1 GB). Target max
    RssAnon <= 64 MB.

How serve is started: `embedstream serve --data FILE --host 127.0.0.1 --port PORT` (GRPC_PORT=PORT
also set, LOG_LEVEL=WARNING); add flags with --serve-arg.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import time
import uuid
from pathlib import Path

from embedstream_py.bench import common as C
from embedstream_py.bench.convert import make_pickle
from embedstream_py.datafile import key_bytes, read_table


def ensure_pickle() -> Path:
    pkl = C.DATA_DIR / f"reference-{C.REF_ROWS}x{C.REF_DIM}.pkl"
    make_pickle(C.REF_ROWS, C.REF_DIM, pkl)
    return pkl


def ensure_converted(pkl: Path, exe: Path) -> tuple[Path, str]:
    out = C.DATA_DIR / f"serve-{C.REF_ROWS}.arrow"
    if out.exists() and out.stat().st_mtime > pkl.stat().st_mtime:
        how = (out.with_suffix(".how").read_text() if out.with_suffix(".how").exists()
               else "unknown")
        print(f"reusing {out} ({how})")
        return out, how
    p = subprocess.run([str(exe), "convert", str(pkl), "-o", str(out), "--force", "--no-progress"],
                       capture_output=True, text=True)
    if p.returncode == 0:
        how = "embedstream convert"
    else:
        print(f"embedstream convert failed ({p.stderr.strip()[-300:]});"
              " using bench.peer_convert for the served file")
        subprocess.run(C.py_m("bench.peer_convert", pkl, out), check=True, env=C.child_env())
        how = "peer_convert (embedstream convert unavailable)"
    out.with_suffix(".how").write_text(how)
    return out, how


def prepare(what: str) -> tuple[dict, Path, Path, Path, str]:
    """How bench.serve and bench.upload start: the venv checked, the machine
    reported, the binary found, the realistic pickle and its conversion made
    or reused. (info, binary, pickle, arrow file, how the file was made)"""
    C.require_venv()
    info = C.machine_report()
    exe = C.embedstream_bin()
    pkl = ensure_pickle()
    arrow, how = ensure_converted(pkl, exe)
    print(f"{what} file: {arrow} ({arrow.stat().st_size / 2**20:.0f} MiB, made by {how})")
    return info, exe, pkl, arrow, how


def ensure_arrow(rows: int, dim: int) -> Path:
    out = C.DATA_DIR / f"gen-{rows}x{dim}.arrow"
    if out.exists():
        print(f"reusing {out} ({out.stat().st_size / 2**20:.0f} MiB)")
        return out
    print(f"generating {out} ...", flush=True)
    subprocess.run(C.py_m("bench.make_arrow", "--rows", rows, "--dim", dim, "--out", out),
                   check=True, env=C.child_env())
    return out


def start_serve(exe: Path, data: Path, extra: list[str]) -> C.Server:
    port = C.free_port()
    t0 = time.perf_counter()
    s = C.Server("embedstream-serve",
                 [str(exe), "serve", "--data", str(data), "--host", "127.0.0.1", "--port", str(port)] + extra,
                 port,
                 env={"GRPC_PORT": str(port), "LOG_LEVEL": "WARNING"}, ready_timeout=300)
    s.startup_s = time.perf_counter() - t0
    return s


def python_server(pkl: Path) -> C.Server:
    """The Python data server stand-in (`py_server legacy`) on a free port."""
    port = C.free_port()
    return C.Server("python-data-server", C.py_m("py_server", "legacy"), port,
                    env={"PKL_PATH": str(pkl), "GRPC_PORT": str(port)})


def client(addr: str, *args: str, timeout: float = 1200) -> dict:
    p = subprocess.run(C.py_m("bench.stream_client", "--addr", addr, *args),
                       capture_output=True, text=True, timeout=timeout, env=C.child_env())
    if p.returncode != 0:
        raise RuntimeError(f"client failed against {addr}: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def pull_runs(server: C.Server, runs: int, warmup: bool, expect_rows: int) -> dict:
    rates, res = [], []
    with C.RssSampler(server.proc.pid) as rss:
        if warmup:
            client(server.addr, "full")
        for _ in range(runs):
            r = client(server.addr, "full")
            if r["rows"] != expect_rows:
                print(f"  WARNING: {server.name} sent {r['rows']} rows, expected {expect_rows}")
            res.append(r)
            rates.append(r["rows"] / r["seconds"])
    print(f"  {server.name}: " + ", ".join(f"{x:,.0f}" for x in rates) + " rows/s"
          f"; max RssAnon {rss.mib('RssAnon'):.0f} MiB, VmRSS {rss.mib('VmRSS'):.0f} MiB", flush=True)
    return {"rows_per_s": C.median(rates), "all": rates, "runs": res,
            "max_rss_anon_mib": rss.mib("RssAnon"), "max_vmrss_mib": rss.mib("VmRSS")}


# ---------------------------------------------------------------------------


def attempt(out: dict, key: str, fn) -> None:
    """Run one measurement; a server that cannot start is reported, not fatal."""
    try:
        out[key] = fn()
    except Exception as e:
        msg = str(e).strip().splitlines()
        print(f"  {key}: FAILED: {' | '.join(msg[-3:])[:600]}", flush=True)
        out[key] = {"error": str(e)[-2000:]}


def fmt(out: dict, key: str, field: str, f: str) -> str:
    v = out.get(key, {}).get(field)
    return format(v, f) if isinstance(v, (int, float)) else "failed"


def part_a(exe, arrow, pkl, a, extra) -> dict:
    print(f"\n== (a) full stream, chunk 300, one grpcio client (decodes every chunk); load {C.loadavg()}")
    out = {}

    def es():
        with start_serve(exe, arrow, extra) as s:
            return pull_runs(s, a.runs, True, C.REF_ROWS)

    def replay():
        port = C.free_port()
        with C.Server("replay", C.py_m("py_server", "replay", "--data", arrow, "--port", port),
                      port, ready_timeout=600) as s:
            return pull_runs(s, a.runs, True, C.REF_ROWS)

    def python():
        with python_server(pkl) as s:
            return pull_runs(s, a.python_runs, False, C.REF_ROWS)

    attempt(out, "embedstream", es)
    attempt(out, "replay", replay)
    attempt(out, "python", python)
    e, r, p = (out[k].get("rows_per_s", float("nan")) for k in ("embedstream", "replay", "python"))
    print(C.table([
        ["embedstream serve", fmt(out, "embedstream", "rows_per_s", ",.0f"), "1.00",
         fmt(out, "embedstream", "max_rss_anon_mib", ".0f")],
        ["replay (ceiling)", fmt(out, "replay", "rows_per_s", ",.0f"), f"{C.ratio(r, e):.2f}",
         fmt(out, "replay", "max_rss_anon_mib", ".0f")],
        ["Python data server", fmt(out, "python", "rows_per_s", ",.0f"), f"{C.ratio(p, e):.4f}",
         fmt(out, "python", "max_rss_anon_mib", ".0f")],
    ], ["server", "rows/s (median)", "vs serve", "max RssAnon MiB"]))
    out["serve_vs_replay"] = C.ratio(e, r)
    out["serve_vs_python"] = C.ratio(e, p)
    out["replay_vs_python"] = C.ratio(r, p)
    print(f"  serve / replay = {out['serve_vs_replay']:.2f} (target >= 0.70) -> "
          f"{C.verdict(out['serve_vs_replay'] >= 0.70, out['serve_vs_replay'])}")
    print(f"  serve / Python = {out['serve_vs_python']:.1f}x (target >= 40x) -> "
          f"{C.verdict(out['serve_vs_python'] >= 40, out['serve_vs_python'])}")
    print(f"  (replay / Python = {out['replay_vs_python']:.1f}x: the most any server can gain"
          " with this client)")
    return out


def flight_pull(addr: str, ticket: bytes) -> tuple[int, int, float]:
    import pyarrow.flight as fl

    c = fl.connect(f"grpc://{addr}")
    t0 = time.perf_counter()
    reader = c.do_get(fl.Ticket(ticket))
    rows = nbytes = 0
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        rows += chunk.data.num_rows
        nbytes += chunk.data.get_total_buffer_size()
    dt = time.perf_counter() - t0
    c.close()
    return rows, nbytes, dt


def flight_runs(name: str, addr: str, ticket: bytes, runs: int) -> dict:
    flight_pull(addr, ticket)
    res = [flight_pull(addr, ticket) for _ in range(runs)]
    rates = [b / dt / 1e9 for _, b, dt in res]
    print(f"  {name}: " + ", ".join(f"{x:.2f}" for x in rates) + " GB/s"
          f" ({res[0][0]:,} rows, {res[0][1] / 1e6:.0f} MB, "
          + ", ".join(f"{dt:.3f}s" for _, _, dt in res) + ")", flush=True)
    return {"gb_per_s": C.median(rates), "all": rates, "rows": res[0][0], "bytes": res[0][1],
            "seconds": [dt for _, _, dt in res]}


def part_b(exe, arrow, a, extra) -> dict:
    print(f"\n== (b) Arrow Flight do_get of the whole file (pyarrow.flight client); load {C.loadavg()}")
    out = {}

    def es():
        with start_serve(exe, arrow, extra) as s:
            return flight_runs("embedstream serve", s.addr, a.flight_ticket.encode(), a.runs)

    def pya():
        port = C.free_port()
        with C.Server("pyarrow-flight", C.py_m("py_server", "flight", "--data", arrow,
                                                "--port", port), port) as s:
            return flight_runs("pyarrow Flight server", s.addr, b"all", a.runs)

    attempt(out, "embedstream", es)
    attempt(out, "pyarrow", pya)
    e = out["embedstream"].get("gb_per_s", float("nan"))
    p = out["pyarrow"].get("gb_per_s", float("nan"))
    out["ratio"] = C.ratio(e, p)
    if out["embedstream"].get("rows") != out["pyarrow"].get("rows"):
        print(f"  WARNING: rows differ: {out['embedstream'].get('rows')} vs {out['pyarrow'].get('rows')}")
    print(C.table([["embedstream serve", fmt(out, "embedstream", "gb_per_s", ".2f"), "1.00"],
                   ["pyarrow Flight", fmt(out, "pyarrow", "gb_per_s", ".2f"), f"{C.ratio(p, e):.2f}"]],
                  ["server", "GB/s (median)", "vs serve"]))
    print(f"  serve / pyarrow = {out['ratio']:.2f}x (target >= 1.0) -> {C.verdict(out['ratio'] >= 1.0, out['ratio'])}")
    return out


def keys_of(arrow: Path, n_req: int, seed: int) -> list[str]:
    keys = key_bytes(read_table(arrow))
    n = len(keys)
    rng = random.Random(seed)
    idx = [rng.randrange(n // 2, n - 1) for _ in range(n_req)]
    return [str(uuid.UUID(bytes=keys[i])) for i in idx]


def part_c(exe, arrow, pkl, a, extra) -> dict:
    print(f"\n== (c) time to first chunk on a resume from the second half; load {C.loadavg()}")
    sizes = [(C.REF_ROWS, C.REF_DIM, arrow)]
    for rows, dim in ((C.REF_ROWS * 10, 384), (C.REF_ROWS * 100, 16)):
        if str(rows) in a.ttfc_skip.split(","):
            continue
        sizes.append((rows, dim, ensure_arrow(rows, dim)))
    out = {}
    kf = C.DATA_DIR / "ttfc-keys.txt"
    for rows, dim, path in sizes:
        keys = keys_of(path, a.ttfc_requests, seed=rows)
        kf.write_text("\n".join(keys))
        try:
            with start_serve(exe, path, extra) as s, C.RssSampler(s.proc.pid) as rss:
                r = client(s.addr, "ttfc", "--keys-file", str(kf))
        except Exception as e:
            print(f"  {rows:,} x {dim}: FAILED: {str(e).strip()[-400:]}")
            continue
        t = r["ttfc_ms"]
        out[rows] = {"dim": dim, "file_mib": path.stat().st_size / 2**20, "n": len(t),
                     "errors": r["errors"][:3], "n_errors": len(r["errors"]),
                     "p50_ms": C.pct(t, 50), "p99_ms": C.pct(t, 99), "max_ms": max(t) if t else None,
                     "startup_s": s.startup_s, "max_rss_anon_mib": rss.mib("RssAnon")}
        print(f"  {rows:,} x {dim}: p50 {out[rows]['p50_ms']:.2f} ms, p99 {out[rows]['p99_ms']:.2f} ms"
              f" ({len(t)} calls, {len(r['errors'])} errors; serve ready in {s.startup_s:.2f}s)",
              flush=True)
        if r["errors"]:
            print("   first error:", r["errors"][0])
    if a.python_ttfc_requests > 0:
        import pandas as pd

        ids = pd.read_pickle(pkl)["id"]
        rng = random.Random(1)
        ks = [ids.iloc[rng.randrange(100_000, len(ids) - 1)] for _ in range(a.python_ttfc_requests)]
        kf.write_text("\n".join(ks))
        with python_server(pkl) as s:
            r = client(s.addr, "ttfc", "--keys-file", str(kf), "--warmup", "0")
        t = r["ttfc_ms"]
        out["python"] = {"n": len(t), "p50_ms": C.pct(t, 50), "max_ms": max(t) if t else None}
        print(f"  Python data server, {C.REF_ROWS:,} rows: p50 {out['python']['p50_ms']:.0f} ms"
              f" ({len(t)} calls)")
    rows_t = [[f"{k:,}", v["dim"], f"{v['file_mib']:.0f}", f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}",
               f"{v['startup_s']:.2f}"] for k, v in out.items() if k != "python"]
    print(C.table(rows_t, ["rows", "dim", "file MiB", "p50 ms", "p99 ms", "serve start s"]))
    p50s = [v["p50_ms"] for k, v in out.items() if k != "python"]
    ok = bool(p50s) and all(x <= 5 for x in p50s)
    flat = C.ratio(max(p50s), min(p50s)) if p50s else float("nan")
    print(f"  p50 <= 5 ms at every size -> {C.verdict(ok, flat)}; largest/smallest p50 = {flat:.2f}"
          f" (flat = near 1)")
    if "python" in out and p50s:
        print(f"  Python server p50 / serve p50 at {C.REF_ROWS:,}: "
              f"{C.ratio(out['python']['p50_ms'], p50s[0]):.0f}x")
    return out


def part_d(exe, a, extra) -> dict:
    print(f"\n== (d) serve memory while {a.clients} clients stream a >= 1 GB file; load {C.loadavg()}")
    path = ensure_arrow(700_000, 384)
    procs = []
    with start_serve(exe, path, extra) as s:
        idle = C.proc_status(s.proc.pid)
        t0 = time.perf_counter()
        with C.RssSampler(s.proc.pid, 0.05) as rss:
            for _ in range(a.clients):
                procs.append(subprocess.Popen(
                    C.py_m("bench.stream_client", "--addr", s.addr, "full", "--raw"),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=C.child_env()))
            results = []
            for p in procs:
                o, e = p.communicate(timeout=1800)
                if p.returncode != 0:
                    raise RuntimeError(f"client failed: {e[-1500:]}")
                results.append(json.loads(o.strip().splitlines()[-1]))
        dt = time.perf_counter() - t0
    total = sum(r["bytes"] for r in results)
    out = {"file_mib": path.stat().st_size / 2**20, "clients": a.clients, "seconds": dt,
           "bytes_total": total, "idle_kib": idle, "max_kib": rss.max, "samples": rss.samples,
           "per_client_bytes": [r["bytes"] for r in results]}
    print(C.table([
        ["RssAnon", f"{idle.get('RssAnon', 0) / 1024:.1f}", f"{rss.mib('RssAnon'):.1f}"],
        ["RssFile", f"{idle.get('RssFile', 0) / 1024:.1f}", f"{rss.mib('RssFile'):.1f}"],
        ["VmRSS", f"{idle.get('VmRSS', 0) / 1024:.1f}", f"{rss.mib('VmRSS'):.1f}"],
    ], ["serve", "idle MiB", "max during MiB"]))
    print(f"  {a.clients} clients x {out['file_mib']:.0f} MiB file: {total / 1e9:.2f} GB sent in {dt:.1f}s"
          f" ({total / dt / 1e9:.2f} GB/s), {rss.samples} samples")
    print(f"  max RssAnon {rss.mib('RssAnon'):.1f} MiB (target <= 64 MB) -> "
          f"{C.verdict(rss.max.get('RssAnon', 0) * 1024 <= 64e6)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="a,b,c,d")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--python-runs", type=int, default=1)
    ap.add_argument("--ttfc-requests", type=int, default=200)
    ap.add_argument("--python-ttfc-requests", type=int, default=3)
    ap.add_argument("--ttfc-skip", default="", help="sizes to skip in (c), e.g. 14189700")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--flight-ticket", default="all",
                    help="ticket for serve's Flight do_get (see src/serve/flight.rs)")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra argument for `embedstream serve` (repeatable)")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    info, exe, pkl, arrow, how = prepare("served")
    res = {"machine": info, "served_file_made_by": how}
    for part, fn in (("a", lambda: part_a(exe, arrow, pkl, a, a.serve_arg)),
                     ("b", lambda: part_b(exe, arrow, a, a.serve_arg)),
                     ("c", lambda: part_c(exe, arrow, pkl, a, a.serve_arg)),
                     ("d", lambda: part_d(exe, a, a.serve_arg))):
        if part in parts:
            try:
                res[part] = fn()
            except Exception as e:  # report and go on with the other parts
                print(f"  part ({part}) FAILED: {e}")
                res[part] = {"error": str(e)}
    C.save_results("serve", res)


if __name__ == "__main__":
    main()
