"""Benchmark: a refresh conversion (`convert --previous`) against a plain one, same run.

Run from the repository root, with the benchmark venv and a release build:

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r scripts/requirements-bench.txt
    cargo build --release          # CARGO_TARGET_DIR is honoured, or set EMBEDSTREAM_BIN
    PYTHONPATH=scripts .venv-bench/bin/python -m embedstream_py.bench.refresh [--scales 1,10] [--runs 3]

Per scale (rows = 141,897 x scale, 384-d float64, the reference layout):
  - OLD.pkl: the stand-in, `create_test_data --large` (reused from
    bench-data/ when bench_convert.py already built it), converted once to OLD.arrow;
  - NEW.pkl: OLD.pkl re-exported with 2% of rows removed, 1% changed (one
    vector element +0.01, which survives float32 narrowing) and 5% added at the
    end (fresh ids, unit-norm vectors), written by pandas.to_pickle;
  - measured, each under `/usr/bin/time -v` in a fresh process, one warm-up then
    --runs runs, alternating so both see the same machine state:
      plain:   embedstream convert NEW.pkl -o plain.arrow --force --no-progress
      refresh: embedstream convert NEW.pkl --previous OLD.arrow --match-on id [--on-change renew]
               -o refresh.arrow --force --no-progress
It prints the medians, the ratios and the targets of issue 9 (refresh time
<= 1.3x plain; refresh peak RSS <= plain + 64 MiB), and checks the refresh's
own summary counts against what was done to the pickle.

--before-bin PATH also measures another build (e.g. main's) in the same run,
its plain and refresh runs interleaved with this build's, on the same NEW:
a before/after pair under the same machine state. Its rows are labelled
"before" and its ratios are its own refresh against its own plain.

"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from embedstream_py.bench import common as C
from embedstream_py.bench.convert import make_pickle as make_old

REMOVED, CHANGED, ADDED = 0.02, 0.01, 0.05


def make_new(old: Path, out: Path, seed: int = 9) -> dict:
    """OLD re-exported: rows removed, changed and added. Returns the expected counts."""
    import numpy as np
    import pandas as pd

    df = pd.read_pickle(old)  # our own stand-in, trusted
    n = len(df)
    rng = np.random.default_rng(seed)
    removed = rng.choice(n, size=int(n * REMOVED), replace=False)
    keep = np.ones(n, dtype=bool)
    keep[removed] = False
    new = df[keep].reset_index(drop=True)
    del df
    changed = rng.choice(len(new), size=int(n * CHANGED), replace=False)
    vectors = new["job_post_vectors"].to_numpy(copy=True)
    for i in changed:
        v = vectors[i].copy()
        v[0] += 0.01
        vectors[i] = v
    new["job_post_vectors"] = vectors
    added = int(n * ADDED)
    dim = len(vectors[0])
    picks = rng.integers(0, len(new), added)
    fresh = rng.standard_normal((added, dim))
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    cells = np.empty(added, dtype=object)
    for i in range(added):
        cells[i] = fresh[i]
    extra = pd.DataFrame({
        "id": [f"refresh-added-{i:08d}" for i in range(added)],
        "Company Name": new["Company Name"].to_numpy()[picks],
        "Exp Years": new["Exp Years"].to_numpy()[picks],
        "English Level": new["English Level"].to_numpy()[picks],
        "Primary Keyword": new["Primary Keyword"].to_numpy()[picks],
        "job_post_vectors": cells,
    })
    new = pd.concat([new, extra], ignore_index=True)
    tmp = out.with_name(out.name + ".tmp")
    new.to_pickle(tmp)
    tmp.replace(out)
    return {"kept": n - len(removed), "added": added, "removed": len(removed),
            "changed": len(changed)}


def run(label: str, cmd: list[str]) -> dict:
    r = C.time_v(cmd)
    r["cpu_s"] = (r["user_s"] or 0) + (r["sys_s"] or 0)
    print(f" {label} {r['wall_s']:.2f}s/{r['cpu_s']:.2f}cpu/{r['peak_rss_mib']:.0f}MiB", end="",
          flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="1,10", help="row multiples of 141,897 (default 1,10)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--on-change", choices=["keep", "renew"], default="keep",
                    help="the refresh's --on-change (default keep, the default of convert)")
    ap.add_argument("--dim", type=int, default=C.REF_DIM)
    ap.add_argument("--before-bin", default=None,
                    help="another embedstream binary measured in the same run (before/after)")
    a = ap.parse_args()
    C.require_venv()
    info = C.machine_report()
    builds = {"after" if a.before_bin else "this": str(C.embedstream_bin())}
    if a.before_bin:
        builds = {"before": a.before_bin, **builds}
        info["before_bin"] = a.before_bin
    exe = builds["after" if a.before_bin else "this"]
    results = {}
    for sc in [int(s) for s in a.scales.split(",") if s]:
        rows = C.REF_ROWS * sc
        old_pkl = C.DATA_DIR / f"reference-{rows}x{a.dim}.pkl"
        new_pkl = C.DATA_DIR / f"refresh-new-{rows}x{a.dim}.pkl"
        old = C.DATA_DIR / f"refresh-old-{rows}.arrow"
        plain_out = C.DATA_DIR / f"refresh-plain-{rows}.arrow"
        refresh_out = C.DATA_DIR / f"refresh-refresh-{rows}.arrow"
        make_old(rows, a.dim, old_pkl)
        print(f"building {new_pkl} ...", flush=True)
        expected = make_new(old_pkl, new_pkl)
        subprocess.run([exe, "convert", str(old_pkl), "-o", str(old), "--force", "--no-progress"],
                       check=True, capture_output=True)
        cmds = {}
        for label, b in builds.items():
            cmds[label] = (
                [b, "convert", str(new_pkl), "-o", str(plain_out), "--force", "--no-progress"],
                [b, "convert", str(new_pkl), "--previous", str(old), "--match-on", "id",
                 "--on-change", a.on_change, "-o", str(refresh_out), "--force", "--no-progress"],
            )
        print(f"== {rows:,} rows x {a.dim}; load {C.loadavg()}\n  warm-up:", end="", flush=True)
        first = {}
        for label, (plain, refresh) in cmds.items():
            run(f"{label} plain", plain)
            first[label] = run(f"{label} refresh", refresh)
        print("\n  measured:", end="", flush=True)
        runs = {label: ([], []) for label in cmds}
        for _ in range(a.runs):
            for label, (plain, refresh) in cmds.items():
                runs[label][0].append(run(f"{label} plain", plain))
                runs[label][1].append(run(f"{label} refresh", refresh))
        print(f"\n  load after: {C.loadavg()}")
        for label, (plain, refresh) in cmds.items():
            line = first[label]["stdout"]
            got = {k: int(v) for v, k in re.findall(r"(\d+) (kept|added|removed)", line)}
            got["changed"] = int(m.group(1)) if (m := re.search(r"\((\d+) changed", line)) else -1
            p_runs, r_runs = runs[label]
            results[(label, sc)] = {
                "build": label,
                "bin": builds[label],
                "rows": rows,
                "expected": expected,
                "summary": got,
                "summary_line": line.strip(),
                "plain": {"cmd": " ".join(plain), "walls": [r["wall_s"] for r in p_runs],
                          "cpus": [r["cpu_s"] for r in p_runs],
                          "rss": [r["peak_rss_mib"] for r in p_runs]},
                "refresh": {"cmd": " ".join(refresh), "walls": [r["wall_s"] for r in r_runs],
                            "cpus": [r["cpu_s"] for r in r_runs],
                            "rss": [r["peak_rss_mib"] for r in r_runs]},
            }
        for out in (plain_out, refresh_out, old, new_pkl):
            out.unlink(missing_ok=True)

    print(f"\n== results (median of {a.runs} runs after one warm-up each)")
    table = []
    for (label, sc), r in results.items():
        pw, rw = C.median(r["plain"]["walls"]), C.median(r["refresh"]["walls"])
        pr, rr = C.median(r["plain"]["rss"]), C.median(r["refresh"]["rss"])
        pc, rc = C.median(r["plain"]["cpus"]), C.median(r["refresh"]["cpus"])
        r.update(plain_s=pw, refresh_s=rw, plain_rss=pr, refresh_rss=rr, plain_cpu=pc,
                 refresh_cpu=rc)
        table.append([label, f"{r['rows']:,}", f"{pw:.2f}", f"{rw:.2f}", f"{C.ratio(rw, pw):.2f}x",
                      f"{pc:.2f}", f"{rc:.2f}", f"{C.ratio(rc, pc):.2f}x",
                      f"{pr:.0f}", f"{rr:.0f}", f"{rr - pr:+.0f}"])
    # CPU (user + sys) is printed beside wall time: on a shared machine it
    # moves far less with the load than wall time does.
    print(C.table(table, ["build", "rows", "plain s", "refresh s", "time ratio", "plain CPU s",
                          "refresh CPU s", "CPU ratio", "plain peak RSS MiB",
                          "refresh peak RSS MiB", "RSS delta MiB"]))
    print("\n== checks")
    for (label, sc), r in results.items():
        t = C.ratio(r["refresh_s"], r["plain_s"])
        d = r["refresh_rss"] - r["plain_rss"]
        print(f"  {label} {r['rows']:,}: refresh time <= 1.3x plain: {t:.2f}x -> {C.verdict(t <= 1.3, t)}")
        print(f"  {label} {r['rows']:,}: refresh peak RSS <= plain + 64 MiB: {d:+.0f} MiB"
              f" -> {C.verdict(d <= 64, d)}")
        ok = r["summary"] == r["expected"]
        print(f"  {label} {r['rows']:,}: summary counts {r['summary']} == what was done {r['expected']}"
              f" -> {'met' if ok else 'MISSED'}")
    C.save_results("refresh", {"machine": info,
                               "results": {f"{label}-{sc}": r for (label, sc), r in results.items()}})


if __name__ == "__main__":
    main()
