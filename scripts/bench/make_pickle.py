"""Fallback maker of the realistic reference pickle, used by bench_convert.py only
when scripts/create_test_data.py (branch `fixtures`) has no `--large` yet.

    python scripts/bench/make_pickle.py --rows 141897 --dim 384 --out bench-data/x.pkl

Same layout as the reference data set (batch-server.md): `id` uuid5 strings,
`Company Name` (a few thousand distinct), `Exp Years` (`2y`), `English Level`,
`Primary Keyword`, `job_post_vectors` (one float64 numpy array per row),
written with DataFrame.to_pickle (protocol 5) by the venv's pandas 2.1.4 /
numpy 1.26.2. Rows are built in blocks to keep memory near the final frame.
"""

from __future__ import annotations

import argparse
import os
import uuid

import numpy as np
import pandas as pd

LEVELS = ["No English", "Beginner/Elementary", "Pre-Intermediate", "Intermediate",
          "Upper-Intermediate", "Advanced/Fluent"]
KEYWORDS = ["Java", "Python", "JavaScript", "TypeScript", "Go", "Rust", "C++", "C#", ".NET",
            "PHP", "Ruby", "Scala", "Kotlin", "Swift", "iOS", "Android", "Flutter", "Node.js",
            "Angular", "React", "Vue.js", "Data Science", "Data Engineer", "Machine Learning",
            "DevOps", "SRE", "QA", "QA Automation", "Business Analyst", "Product Manager",
            "Project Manager", "Design", "SQL", "DBA", "Golang", "Embedded", "Security"]
NS = uuid.UUID("9b7a6a5e-3c1f-5d2e-8f00-656d62656473")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=141_897)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    companies = [f"Company {i} {'Ltd' if i % 3 else 'LLC'}" for i in range(3000)]
    ci = rng.integers(0, len(companies), a.rows)
    ey = rng.integers(0, 16, a.rows)
    el = rng.integers(0, len(LEVELS), a.rows)
    kw = rng.integers(0, len(KEYWORDS), a.rows)
    vectors = np.empty(a.rows, dtype=object)
    block = 65536
    for s in range(0, a.rows, block):
        m = rng.standard_normal((min(block, a.rows - s), a.dim))
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        for j in range(m.shape[0]):
            vectors[s + j] = m[j].copy()  # one array per row, as the real data has
    ids = [str(uuid.uuid5(NS, f"row-{i}")) for i in range(a.rows)]
    df = pd.DataFrame({
        "id": ids,
        "Company Name": [companies[i] for i in ci],
        "Exp Years": [f"{y}y" for y in ey],
        "English Level": [LEVELS[i] for i in el],
        "Primary Keyword": [KEYWORDS[i] for i in kw],
        "job_post_vectors": vectors,
    })
    tmp = a.out + ".tmp"
    df.to_pickle(tmp)
    os.replace(tmp, a.out)
    print(f"wrote {a.rows} x {a.dim} to {a.out} ({os.path.getsize(a.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
