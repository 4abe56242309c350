"""Benchmark 3: `embedstream upload` of the realistic file to a Python IngestDataStream receiver.

    PYTHONPATH=scripts .venv-bench/bin/python -m embedstream_py.bench.upload [--runs 3] [--modes count,parse]

The file is the realistic 141,897 x 384 conversion (bench-data/serve-141897.arrow,
made as in bench.serve). The receiver is embedstream_py.ingest_receiver
(grpcio, both package names) with `--rows MODE`: mode `count` counts bytes and
rows without parsing the JSON (occurrences of `"id":`), mode `parse` json.loads
every chunk. For each mode:
one warm-up upload, then --runs uploads, each `embedstream upload FILE --to
127.0.0.1:PORT` under /usr/bin/time -v; median wall time -> rows/s and MB/s of
JSON, the upload's peak RSS, and the receiver's own view (rows, bytes, seconds
from first to last message). The Python receiver is likely the bottleneck in
`parse` mode: the `count` mode shows what upload itself can do.
"""

from __future__ import annotations

import argparse
import json
import time

from embedstream_py.bench import common as C
from embedstream_py.bench.serve import prepare


def read_reports(server: C.Server, n_before: int) -> list[dict]:
    lines = [l for l in server.log_tail(10**7).splitlines() if l.startswith("{")]
    return [json.loads(l) for l in lines[n_before:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="count,parse")
    ap.add_argument("--upload-arg", action="append", default=[],
                    help="extra argument for `embedstream upload` (repeatable)")
    a = ap.parse_args()
    info, exe, _pkl, arrow, how = prepare("uploaded")
    out = {"machine": info, "file_made_by": how}
    rows_t = []
    for mode in a.modes.split(","):
        port = C.free_port()
        cmd = C.py_m("ingest_receiver", "--port", port, "--rows", mode,
                     "--package", "com.alpha.backend.grpc", "--package", "embedding")
        up = [str(exe), "upload", str(arrow), "--to", f"127.0.0.1:{port}"] + a.upload_arg
        with C.Server(f"ingest-{mode}", cmd, port) as s:
            C.time_v(up)  # warm-up
            time.sleep(0.2)
            n0 = len(read_reports(s, 0))
            runs = []
            for _ in range(a.runs):
                r = C.time_v(up)
                time.sleep(0.2)
                rep = read_reports(s, n0 + len(runs))
                runs.append({"wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"],
                             "user_s": r["user_s"], "receiver": rep[0] if rep else None})
        wall = C.median([x["wall_s"] for x in runs])
        rec = runs[-1]["receiver"] or {}
        rows, nbytes = rec.get("rows", 0), rec.get("bytes", 0)
        res = {"runs": runs, "wall_s": wall, "rows": rows, "bytes": nbytes,
               "rows_per_s": rows / wall, "mb_per_s": nbytes / wall / 1e6,
               "peak_rss_mib": C.median([x["peak_rss_mib"] for x in runs]),
               "receiver_s": C.median([x["receiver"]["seconds"] for x in runs if x["receiver"]])}
        out[mode] = res
        print(f"  {mode}: " + ", ".join(f"{x['wall_s']:.2f}s" for x in runs)
              + f"; receiver saw {rows:,} rows, {nbytes / 1e6:.0f} MB, metadata {rec.get('metadata')}",
              flush=True)
        if rows != C.REF_ROWS:
            print(f"  WARNING: receiver counted {rows} rows, expected {C.REF_ROWS}")
        rows_t.append([mode, f"{wall:.2f}", f"{res['rows_per_s']:,.0f}", f"{res['mb_per_s']:.0f}",
                       f"{res['receiver_s']:.2f}", f"{res['peak_rss_mib']:.0f}"])
    print(C.table(rows_t, ["receiver mode", "upload wall s", "rows/s", "JSON MB/s",
                           "receiver s", "upload peak RSS MiB"]))
    C.save_results("upload", out)


if __name__ == "__main__":
    main()
