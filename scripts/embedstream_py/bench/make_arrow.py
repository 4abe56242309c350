"""Write a big embedstream-shaped Arrow IPC file without a pickle (for serve benchmarks).

    python -m embedstream_py.bench.make_arrow --rows 1418970 --dim 384 --out bench-data/x.arrow

The reference layout as `embedstream convert` writes it (src/format.rs):
`id` (utf8, stand-in v5 strings), `Company Name`, `Exp Years` (`2y`),
`English Level`, `Primary Keyword` (utf8), `job_post_vectors`
(FixedSizeList<float32 not null, dim>), and the key `uuid`
(FixedSizeBinary(16) with the `arrow.uuid` extension) holding strictly
increasing UUID v7 values: row i has unix_ms = 1_700_000_000_000 + i and
pseudo-random rand_a/rand_b (tests/integration/common.rs uses the same rule). Schema
metadata: embedstream.key_column, vector_column, vector_dim, rows,
keys_sorted=true, source, version. Batches hold about 3 MiB, like convert's.
The strings and vectors of one template batch are reused for every batch
(their content does not matter to the serving benchmarks), so making a
14M-row file takes seconds and little memory.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pyarrow as pa

from embedstream_py.py_convert import uuid7_array

LEVELS = ["No English", "Beginner/Elementary", "Pre-Intermediate", "Intermediate",
          "Upper-Intermediate", "Advanced/Fluent"]
KEYWORDS = ["Java", "Python", "JavaScript", "Go", "Rust", "C++", "QA", "DevOps", "Data Science",
            "Machine Learning", "Android", "iOS", "PHP", "Ruby", "Scala", "Kotlin", "SQL"]


def keys_for(start: int, n: int) -> np.ndarray:
    i = np.arange(start, start + n, dtype=np.uint64)
    ms = np.uint64(1_700_000_000_000) + i
    r = i * np.uint64(0x9E3779B97F4A7C15)  # wraps: pseudo-random bits, like the Rust helper
    return uuid7_array(ms, r >> np.uint64(52), r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-rows", type=int, default=0, help="default: about 3 MiB per batch")
    ap.add_argument("--first-row", type=int, default=0,
                    help="key rule offset: row i gets the keys of row first_row + i "
                         "(two files with other keys, for the hot swap benchmark)")
    a = ap.parse_args()
    row_bytes = a.dim * 4 + 16 + 36 + 40
    br = a.batch_rows or max(1, (3 * 2**20) // row_bytes)
    rng = np.random.default_rng(1)
    tmpl = min(br, max(a.rows, 1))
    ids = pa.array([f"5a5e{j:04x}-0000-5000-8000-{j:012x}" for j in range(tmpl)], pa.string())
    comp = pa.array([f"Company {j % 2999}" for j in range(tmpl)], pa.string())
    exp = pa.array([f"{j % 16}y" for j in range(tmpl)], pa.string())
    eng = pa.array([LEVELS[j % len(LEVELS)] for j in range(tmpl)], pa.string())
    kw = pa.array([KEYWORDS[j % len(KEYWORDS)] for j in range(tmpl)], pa.string())
    item = pa.field("item", pa.float32(), nullable=False)
    vals = pa.array(rng.standard_normal(tmpl * a.dim, dtype=np.float32))
    vecs = pa.FixedSizeListArray.from_arrays(vals, type=pa.list_(item, a.dim))
    schema = pa.schema([
        pa.field("id", pa.string()),
        pa.field("Company Name", pa.string()),
        pa.field("Exp Years", pa.string()),
        pa.field("English Level", pa.string()),
        pa.field("Primary Keyword", pa.string()),
        pa.field("job_post_vectors", pa.list_(item, a.dim), nullable=False),
        pa.field("uuid", pa.uuid(), nullable=False),
    ], metadata={
        "embedstream.key_column": "uuid",
        "embedstream.vector_column": "job_post_vectors",
        "embedstream.vector_dim": str(a.dim),
        "embedstream.rows": str(a.rows),
        "embedstream.keys_sorted": "true",
        "embedstream.source": "embedstream_py.bench.make_arrow",
        "embedstream.version": "bench",
    })
    tmp = a.out + ".tmp"
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as w:
        for s in range(0, a.rows, br):
            n = min(br, a.rows - s)
            k = keys_for(a.first_row + s, n)
            karr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(k.tobytes())])
            cols = [ids.slice(0, n), comp.slice(0, n), exp.slice(0, n), eng.slice(0, n),
                    kw.slice(0, n), vecs.slice(0, n),
                    pa.ExtensionArray.from_storage(pa.uuid(), karr)]
            w.write_batch(pa.record_batch(cols, schema=schema))
    os.replace(tmp, a.out)
    print(f"wrote {a.rows:,} x {a.dim} in batches of {br} to {a.out} "
          f"({os.path.getsize(a.out) / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
