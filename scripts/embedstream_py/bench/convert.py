"""Benchmark 1: `embedstream convert` against pandas.read_pickle + pyarrow, same run.

Run from the repository root, with the benchmark venv and a release build:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r scripts/requirements-bench.txt
    cargo build --release          # CARGO_TARGET_DIR is honoured, or set EMBEDSTREAM_BIN
    PYTHONPATH=scripts .venv-bench/bin/python -m embedstream_py.bench.convert [--scales 1,10] [--runs 3]

It builds (or reuses) in bench-data/ (gitignored) the realistic pickle
(141,897 x 384 float64, reference layout: `create_test_data --large`, run
with the system python3) and a 10x one (1,418,970 rows). Each is converted by
  - embedstream: `embedstream convert X.pkl -o Y.arrow --force --no-progress`
  - the peer:    bench.peer_convert (pandas.read_pickle,
                 pa.Table.from_pandas, float32 FixedSizeList vectors, UUID v7
                 column, pa.ipc.new_file)
each under `/usr/bin/time -v` in a fresh process: one warm-up run (page cache),
then --runs measured runs; the median wall time and median peak RSS are
reported, with ratios, output sizes and the checks
  embedstream >= 5x faster; embedstream peak RSS <= output size + 128 MB;
  linear cost: (10x time / 1x time) and (10x RSS / 1x RSS) near 10.
Memory: the peer needs ~3x the pickle at 10x (~13 GB); --scales 1 skips it.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from embedstream_py.bench import common as C


def make_pickle(rows: int, dim: int, out: Path) -> None:
    if out.exists():
        print(f"reusing {out} ({out.stat().st_size / 1e6:.1f} MB)")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    # The system python3: create_test_data makes its own pandas 2.1.4 venv.
    cmd = C.module_cmd("create_test_data", "--large", "--rows", rows, "--dim", dim,
                       "--out", out, python="python3")
    print("building:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=C.REPO, env=C.child_env())
    print(f"built {out} ({out.stat().st_size / 1e6:.1f} MB)")


def measure(label: str, cmd: list[str], runs: int, out: Path) -> dict:
    print(f"  {label}: warm-up ...", end="", flush=True)
    C.time_v(cmd)
    walls, rss, cpus = [], [], []
    for i in range(runs):
        r = C.time_v(cmd)
        walls.append(r["wall_s"])
        rss.append(r["peak_rss_mib"])
        cpus.append((r["user_s"] or 0) + (r["sys_s"] or 0))
        print(f" run{i + 1} {r['wall_s']:.2f}s/{r['peak_rss_mib']:.0f}MiB", end="", flush=True)
    print()
    return {
        "cmd": " ".join(cmd),
        "walls": walls,
        "rss": rss,
        "cpus": cpus,
        "wall_s": C.median(walls),
        "cpu_s": C.median(cpus),
        "peak_rss_mib": C.median(rss),
        "out_mib": out.stat().st_size / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="1,10", help="row multiples of 141,897 (default 1,10)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dim", type=int, default=C.REF_DIM)
    ap.add_argument("--no-peer-at", default="", help="scales at which to skip the peer, e.g. 10")
    ap.add_argument("--runs-at", default="",
                    help="measured runs per scale overriding --runs, e.g. 10:1 (time budget)")
    a = ap.parse_args()
    C.require_venv()
    info = C.machine_report()
    exe = C.embedstream_bin()
    scales = [int(s) for s in a.scales.split(",") if s]
    skip_peer = {int(s) for s in a.no_peer_at.split(",") if s}
    runs_at = {int(k): int(v) for k, v in (x.split(":") for x in a.runs_at.split(",") if x)}
    results = {}
    for sc in scales:
        rows = C.REF_ROWS * sc
        pkl = C.DATA_DIR / f"reference-{rows}x{a.dim}.pkl"
        make_pickle(rows, a.dim, pkl)
        es_out = C.DATA_DIR / f"convert-es-{rows}.arrow"
        peer_out = C.DATA_DIR / f"convert-peer-{rows}.arrow"
        print(f"== {rows:,} rows x {a.dim} ({pkl.stat().st_size / 1e6:.0f} MB pickle); load {C.loadavg()}")
        r = {"rows": rows, "pickle_mib": pkl.stat().st_size / 2**20}
        try:
            r["embedstream"] = measure(
                "embedstream", [str(exe), "convert", str(pkl), "-o", str(es_out), "--force",
                                "--no-progress"], runs_at.get(sc, a.runs), es_out)
        except Exception as e:
            print(f"\n  embedstream convert FAILED: {str(e).strip()[-500:]}")
        if sc not in skip_peer:
            r["peer"] = measure(
                "pandas+pyarrow", C.py_m("bench.peer_convert", pkl, peer_out),
                runs_at.get(sc, a.runs), peer_out)
        results[sc] = r
        # The outputs were measured; at 10x they are 2.2 GB each.
        for out in (es_out, peer_out):
            out.unlink(missing_ok=True)

    print(f"\n== results (median of {a.runs} runs after one warm-up, {a.runs_at or 'no override'};"
          " CPU = user + sys)")
    rows_t = []
    nan = {"wall_s": float("nan"), "cpu_s": float("nan"), "peak_rss_mib": float("nan"),
           "out_mib": float("nan")}
    for sc, r in results.items():
        e = r.get("embedstream", nan)
        p = r.get("peer")
        rows_t.append([
            f"{r['rows']:,}", f"{e['wall_s']:.2f}", f"{p['wall_s']:.2f}" if p else "-",
            f"{C.ratio(p['wall_s'], e['wall_s']):.1f}x" if p else "-",
            f"{e['cpu_s']:.2f}", f"{p['cpu_s']:.2f}" if p else "-",
            f"{e['peak_rss_mib']:.0f}", f"{p['peak_rss_mib']:.0f}" if p else "-",
            f"{C.ratio(p['peak_rss_mib'], e['peak_rss_mib']):.1f}x" if p else "-",
            f"{e['out_mib']:.0f}", f"{p['out_mib']:.0f}" if p else "-",
        ])
    print(C.table(rows_t, ["rows", "embedstream s", "peer s", "speed-up", "es CPU s",
                           "peer CPU s", "es peak RSS MiB",
                           "peer peak RSS MiB", "RSS ratio", "es out MiB", "peer out MiB"]))

    print("\n== checks")
    for sc, r in results.items():
        e, p = r.get("embedstream", nan), r.get("peer")
        if p:
            sp = C.ratio(p["wall_s"], e["wall_s"])
            print(f"  {r['rows']:,}: embedstream >= 5x faster than the peer: {sp:.1f}x -> {C.verdict(sp >= 5, sp)}")
        bound = e["out_mib"] + 128
        print(f"  {r['rows']:,}: peak RSS {e['peak_rss_mib']:.0f} MiB <= output {e['out_mib']:.0f} MiB"
              f" + 128 = {bound:.0f} MiB -> {C.verdict(e['peak_rss_mib'] <= bound, bound)}")
    if 1 in results and 10 in results:
        for who in ("embedstream", "peer"):
            a1, a10 = results[1].get(who), results[10].get(who)
            if a1 and a10:
                tr = C.ratio(a10["wall_s"], a1["wall_s"])
                rr = C.ratio(a10["peak_rss_mib"], a1["peak_rss_mib"])
                ok = 7 <= tr <= 13 and rr <= 13
                print(f"  linear ({who}): 10x/1x time {tr:.2f}, peak RSS {rr:.2f} (10 = linear)"
                      f" -> {C.verdict(ok, tr, rr)}")
    C.save_results("convert", {"machine": info, "results": results})


if __name__ == "__main__":
    main()
