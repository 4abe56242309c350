"""Create embedstream's test data from real pandas: fixtures, hostile pickles,
the committed sample and the large benchmark stand-in.

Run with the system Python (3.11). The script makes (or reuses) one virtual
environment per pinned pandas/numpy(/pyarrow) combination and re-runs itself
inside each one to write the pickles, so every fixture is written by the real
library version it claims to come from.

Invocations (from the repository root; PYTHONPATH=scripts, see scripts/README.md)
-----------
    python3 -m embedstream_py.create_test_data                  # fixtures + hostile (default)
    python3 -m embedstream_py.create_test_data --fixtures-only  # only tests/fixtures/pandas/
    python3 -m embedstream_py.create_test_data --hostile-only   # only tests/fixtures/hostile/
    python3 -m embedstream_py.create_test_data --sample         # data/sample.pkl (1,000 x 384)
    python3 -m embedstream_py.create_test_data --large [--rows N] [--dim D] [--out bench-data/x.pkl]
    python3 -m embedstream_py.create_test_data --check          # regenerate into a temp dir and
                                                                # compare bytes with the committed ones
Options: --venv-root DIR (default .venv-testdata/ in the repository root),
--combo NAME (repeatable: only these combinations).

Layout of the fixtures
----------------------
    tests/fixtures/pandas/versions.json          every combination and its `pip freeze`
    tests/fixtures/pandas/<combo>/<frame>.<writer>.pkl
    tests/fixtures/pandas/<combo>/<frame>.<writer>.expected.json

<combo> is one of COMBOS below (e.g. `pandas-2.1.4`, `pandas-3.1.1-pyarrow`);
<writer> is `to_pickle` (DataFrame.to_pickle / pandas.to_pickle, protocol 5)
or `dump-p2`, `dump-p4`, `dump-p5` (pickle.dump with that protocol);
<frame> is one of:
    reference      the reference data set's layout: `id` (uuid5 strings),
                   `Company Name`, `Exp Years` (`2y`), `English Level`,
                   `Primary Keyword`, `job_post_vectors` (one float64 numpy
                   array of dim 8 per row); 40 rows
    kitchen_sink   every column kind (see kitchen_sink() below), a filtered
                   (non-range) row index, integer column names; 24 rows
    dict_of_lists  a plain dict {column: list}, vectors as Python lists
    list_of_dicts  a plain list of {column: value} dicts, vectors as Python lists
    ragged         the reference layout where row 5's vector is one shorter:
                   must be refused
    vector_*       (pandas-2.1.4, to_pickle only) a vector column with one bad
                   cell: a 2-D array, a str, a list holding a str, a numpy
                   array of text, an object array; each must be refused with
                   the message in its expected.json
    empty          the reference columns with zero rows

The expected.json format (read by the Rust tests)
--------------------------------------------------
    {
      "pandas": "2.1.4", "numpy": "1.26.2", "pyarrow": "26.0.1" | null,
      "protocol": 5,                      # read from the pickle's PROTO opcode
      "writer": "to_pickle" | "pickle.dump",
      "frame": "reference",               # which generator made it
      "rows": 40,                         # rows pandas holds (len(DataFrame(obj)))
      "columns": [                        # in the DataFrame's column order
        {
          "name": "Company Name",         # str(label): integer labels become "0", "1"
          "dtype": "object",              # str(pandas dtype) as this pandas names it
          "kind": "string" | "int" | "uint" | "float" | "bool" | "category"
                  | "datetime" | "vector" | "empty",
          "values": [...],                # one entry per row, see below
          "categories": [...],            # category only: the categories, in order
          "tz": "UTC",                    # datetime only, when tz-aware
          "dim": 8                        # vector only: the common length
        }, ...
      ],
      "error": null | "substring"         # the converter must fail and its
                                          # message must contain this substring
    }
Values: JSON null for None / NaN / pd.NA / NaT (in every kind);
  string   -> the string;
  int/uint -> the integer (exact, int64 extremes included);
  float    -> the float64 value (json.dumps of a Python float is repr-exact;
              float32 columns hold the exact float64 widening of the float32);
  bool     -> true/false;
  category -> the category's string, null when missing;
  datetime -> integer nanoseconds since the Unix epoch (UTC instant for
              tz-aware columns, wall clock as if UTC for naive ones);
  vector   -> list of float64 numbers (exact widening for float32 sources;
              the converter narrows to f32 and the tests compare as f32);
  empty    -> an object column without rows: values is [].
A frame whose `error` is non-null still lists what pandas holds (for ragged,
the ragged vectors are written as they are, so the lengths differ).

Determinism: fixed numpy seeds, a fixed uuid5 namespace, no timestamps; running
the script twice with the same pinned versions gives byte-identical pickles
(`--check` verifies that against the committed files).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import pickletools
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from embedstream_py import REPO, child_env, module_cmd

SOURCE = "scripts/embedstream_py/create_test_data.py"  # named in the files it writes
FIXTURES = REPO / "tests" / "fixtures"
PANDAS_FIXTURES = FIXTURES / "pandas"
HOSTILE = FIXTURES / "hostile"

# Every pin was checked to install from wheels on CPython 3.11 (pip install
# --only-binary=:all:). pandas 1.5.3 predates numpy 1.26 but its wheels run on
# it; 1.26.4 is the last numpy 1.x. pandas 2.2.3 is the first 2.2 built against
# numpy 2; 2.1.3 is a numpy 2.1 of its time. 2.4.6 is the newest numpy 2.
COMBOS: dict[str, list[str]] = {
    "pandas-1.5.3": [
        "pandas==1.5.3", "numpy==1.26.4", "python-dateutil==4.0.0",
        "pytz==2026.6", "tzdata==2026.6",
    ],
    # The reference data set's versions.
    "pandas-2.1.4": [
        "pandas==2.1.4", "numpy==1.26.2", "python-dateutil==4.0.0",
        "pytz==2026.6", "tzdata==2026.6",
    ],
    "pandas-2.2.3": [
        "pandas==2.2.3", "numpy==2.1.3", "python-dateutil==4.0.0",
        "pytz==2026.6", "tzdata==2026.6",
    ],
    # String columns become ArrowStringArray (pyarrow buffers in the pickle).
    "pandas-3.1.1-pyarrow": [
        "pandas==3.1.1", "numpy==2.4.6", "pyarrow==26.0.1",
        "python-dateutil==4.0.0", "tzdata==2026.6",
    ],
    # String columns become StringArray over object arrays.
    "pandas-3.1.1-nopyarrow": [
        "pandas==3.1.1", "numpy==2.4.6", "python-dateutil==4.0.0", "tzdata==2026.6",
    ],
}
REFERENCE_COMBO = "pandas-2.1.4"

# uuid5 namespace for every `id` column: fixed so ids are reproducible.
ID_NAMESPACE = uuid.UUID("9b7a6a5e-3c1f-5d2e-8f00-656d62656473")

DIM = 8
ENGLISH_LEVELS = [
    "No English", "Beginner/Elementary", "Pre-Intermediate", "Intermediate",
    "Upper-Intermediate", "Advanced/Fluent",
]
KEYWORDS = [
    "Java", "Python", "JavaScript", "TypeScript", "Go", "Rust", "C++", "C#",
    ".NET", "PHP", "Ruby", "Scala", "Kotlin", "Swift", "iOS", "Android",
    "Flutter", "React Native", "Node.js", "Angular", "React", "Vue.js",
    "Data Science", "Data Engineer", "Machine Learning", "DevOps", "SRE",
    "QA", "QA Automation", "Business Analyst", "Product Manager",
    "Project Manager", "Design", "UI/UX", "SQL", "DBA", "Golang", "Embedded",
    "Security", "Salesforce", "SAP", "Unity", "Blockchain", "Support",
]
SMALL_COMPANIES = [
    "Acme Corp", "Globex", "Initech", "Umbrella", "Zoë Labs", "Hooli",
    "株式会社テスト", "Ünïcödé GmbH", "🚀 Rocket Science", "Stark Industries",
    "Wayne Enterprises", "O'Reilly & Sons", "Tab\tand\nnewline Ltd",
    "Very Long " + "Name " * 60 + "Inc",  # > 255 UTF-8 bytes: BINUNICODE, not SHORT_
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# Part 1: runs inside a combination's venv (pandas importable)
# ---------------------------------------------------------------------------

def _gen_ids(n: int, prefix: str = "job") -> list[str]:
    return [str(uuid.uuid5(ID_NAMESPACE, f"{prefix}-{i}")) for i in range(n)]


def _reference_columns(n: int, dim: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    companies = [SMALL_COMPANIES[int(i)] for i in rng.integers(0, len(SMALL_COMPANIES), n)]
    exp = [f"{int(i)}y" for i in rng.integers(0, 11, n)]
    english = [ENGLISH_LEVELS[int(i)] for i in rng.integers(0, len(ENGLISH_LEVELS), n)]
    keyword = [KEYWORDS[int(i)] for i in rng.integers(0, len(KEYWORDS), n)]
    vectors = rng.standard_normal((n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return {
        "id": _gen_ids(n),
        "Company Name": companies,
        "Exp Years": exp,
        "English Level": english,
        "Primary Keyword": keyword,
    }, vectors


def reference_frame(n: int = 40, dim: int = DIM, seed: int = 7):
    import pandas as pd

    cols, vectors = _reference_columns(n, dim, seed)
    df = pd.DataFrame(cols)
    # Added afterwards, as an embedding step would: a separate object block.
    # Each cell is its own 1-D float64 array (a copy, not a view).
    df["job_post_vectors"] = [row.copy() for row in vectors]
    return df


def ragged_frame():
    df = reference_frame(n=20, seed=11)
    v = df["job_post_vectors"].tolist()
    v[5] = v[5][:-1].copy()
    df["job_post_vectors"] = v
    return df


def empty_frame():
    import pandas as pd

    return pd.DataFrame({c: pd.Series([], dtype=object) for c in [
        "id", "Company Name", "Exp Years", "English Level", "Primary Keyword",
        "job_post_vectors"]})


def kitchen_sink():
    import numpy as np
    import pandas as pd

    n = 30
    rng = np.random.default_rng(42)
    names = ["alpha", None, "Zoë", float("nan"), "", "株式会社", "🚀 emoji",
             "tab\there", "line\nbreak", "x" * 300]
    name = [names[i % len(names)] for i in range(n)]
    colors = ["red", "green", "blue", None]
    i64 = [(-2**63 if i == 0 else 2**63 - 1 if i == 1 else i * 1000 - 7) for i in range(n)]
    i32 = [(-2**31 if i == 0 else 2**31 - 1 if i == 1 else -i) for i in range(n)]
    f64_pool = [0.1, float("nan"), -0.0, 1e300, 5e-324, -2.5, 1 / 3]
    base = np.datetime64("2024-02-29T12:34:56.123456789", "ns")
    ts = np.array([base + np.timedelta64(i * 3_600_000_000_123, "ns") for i in range(n)],
                  dtype="datetime64[ns]")
    ts[3] = np.datetime64("NaT")
    vec32 = rng.standard_normal((n, DIM)).astype(np.float32)
    veclist = rng.standard_normal((n, DIM))
    df = pd.DataFrame({
        "name": name,
        "name_object": pd.Series(name, dtype=object),
        "name_string": pd.array([None if isinstance(x, float) else x for x in name],
                                dtype="string"),
        "color": pd.Categorical([colors[i % 4] for i in range(n)],
                                categories=["blue", "green", "red"]),
        "i64": np.array(i64, dtype=np.int64),
        "i32": np.array(i32, dtype=np.int32),
        "u8": np.array([(i * 37) % 256 if i else 255 for i in range(n)], dtype=np.uint8),
        "f64": np.array([f64_pool[i % len(f64_pool)] * (1 + i) for i in range(n)],
                        dtype=np.float64),
        "f32": np.array([0.1 * i - 1 for i in range(n)], dtype=np.float32),
        "flag": np.array([i % 3 == 0 for i in range(n)], dtype=bool),
        "Int64": pd.array([None if i % 4 == 1 else i - 10 for i in range(n)], dtype="Int64"),
        "boolean": pd.array([None if i % 5 == 2 else i % 2 == 0 for i in range(n)],
                            dtype="boolean"),
        "Float64": pd.array([None if i % 6 == 3 else i / 8 for i in range(n)],
                            dtype="Float64"),
        "ts": pd.Series(ts),
        "ts_utc": pd.Series(ts).dt.tz_localize("UTC"),
        "ts_berlin": pd.Series(ts).dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin"),
        "vec32": [row.copy() for row in vec32],
        "veclist": [[float(x) for x in row] for row in veclist],
        0: np.arange(n, dtype=np.int64) * 3,
        1: [f"int-named-{i}" for i in range(n)],
    })
    # A filtered frame, as after `df = df[mask]`: the row index is no longer a
    # RangeIndex, and the blocks are taken copies.
    df = df[df["i64"] % 5 != 2]
    return df


def plain_rows(n: int = 12, seed: int = 5):
    cols, vectors = _reference_columns(n, DIM, seed)
    cols["job_post_vectors"] = [[float(x) for x in row] for row in vectors]
    return cols


def dict_of_lists():
    return plain_rows()


def list_of_dicts():
    cols = plain_rows()
    names = list(cols)
    return [{k: cols[k][i] for k in names} for i in range(len(cols["id"]))]


FRAMES = {
    "reference": (reference_frame, None),
    "kitchen_sink": (kitchen_sink, None),
    "dict_of_lists": (dict_of_lists, None),
    "list_of_dicts": (list_of_dicts, None),
    # The converter must refuse a vector column whose rows differ in length.
    "ragged": (ragged_frame, "ragged"),
    "empty": (empty_frame, None),
}


def _with_vector_cell(row: int, cell):
    """The reference frame (20 rows) with one vector cell replaced."""
    df = reference_frame(n=20, seed=12)
    v = df["job_post_vectors"].tolist()
    v[row] = cell
    df["job_post_vectors"] = v
    return df


def refused_frames():
    import numpy as np

    V = "column 'job_post_vectors': "
    return {
        "vector_2d": (lambda: _with_vector_cell(3, np.zeros((2, 4))),
                      V + "row 3 holds an array of shape [2, 4]; vectors must be 1-D"),
        "vector_text_cell": (lambda: _with_vector_cell(2, "n/a"),
                             V + "row 2 holds a str among vector cells"),
        "vector_text_item": (lambda: _with_vector_cell(1, [0.5] * 7 + ["x"]),
                             V + "row 1: vector element of type str is not a number"),
        "vector_text_dtype": (lambda: _with_vector_cell(4, np.array(list("abcdefgh"))),
                              V + "row 4 holds a numpy array of dtype <U1, not numbers"),
        "vector_object_array": (lambda: _with_vector_cell(6, np.array([1.0] * 7 + [None])),
                                V + "row 6 holds an object array, not numbers"),
    }


def _is_missing(v) -> bool:
    import pandas as pd

    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float) and v != v:
        return True
    try:
        import numpy as np

        if isinstance(v, np.floating) and np.isnan(v):
            return True
        if isinstance(v, np.datetime64) and np.isnat(v):
            return True
    except TypeError:
        pass
    return False


def describe_column(label, s) -> dict:
    """What pandas holds in Series `s`, in the expected.json format."""
    import numpy as np
    import pandas as pd
    from pandas.api import types as t

    out: dict = {"name": str(label), "dtype": str(s.dtype)}
    vals = list(s)
    if isinstance(s.dtype, pd.CategoricalDtype):
        out["kind"] = "category"
        out["categories"] = [str(c) for c in s.cat.categories]
        out["values"] = [None if _is_missing(v) else str(v) for v in vals]
    elif t.is_datetime64_any_dtype(s.dtype):
        out["kind"] = "datetime"
        tz = getattr(s.dtype, "tz", None)
        if tz is not None:
            out["tz"] = str(tz)
        out["values"] = [None if _is_missing(v) else int(pd.Timestamp(v).value) for v in vals]
    elif t.is_bool_dtype(s.dtype) and not t.is_object_dtype(s.dtype):
        out["kind"] = "bool"
        out["values"] = [None if _is_missing(v) else bool(v) for v in vals]
    elif t.is_integer_dtype(s.dtype):
        out["kind"] = "uint" if t.is_unsigned_integer_dtype(s.dtype) else "int"
        out["values"] = [None if _is_missing(v) else int(v) for v in vals]
    elif t.is_float_dtype(s.dtype):
        out["kind"] = "float"
        out["values"] = [None if _is_missing(v) else float(v) for v in vals]
    elif t.is_string_dtype(s.dtype) and not t.is_object_dtype(s.dtype):
        out["kind"] = "string"
        out["values"] = [None if _is_missing(v) else str(v) for v in vals]
    elif t.is_object_dtype(s.dtype):
        present = [v for v in vals if not _is_missing(v)]
        if not vals:
            out["kind"] = "empty"
            out["values"] = []
        elif present and all(isinstance(v, str) for v in present):
            out["kind"] = "string"
            out["values"] = [None if _is_missing(v) else v for v in vals]
        elif present and all(isinstance(v, (list, np.ndarray)) for v in present):
            out["kind"] = "vector"
            out["values"] = [None if v is None else [float(x) for x in v] for v in vals]
            lengths = {len(v) for v in present}
            if len(lengths) == 1:
                out["dim"] = lengths.pop()
        else:
            raise SystemExit(f"column {label!r}: cannot classify object values {present[:3]!r}")
    else:
        raise SystemExit(f"column {label!r}: unhandled dtype {s.dtype}")
    return out


def describe(obj) -> tuple[int, list[dict]]:
    import pandas as pd

    df = obj if isinstance(obj, pd.DataFrame) else pd.DataFrame(obj)
    return len(df), [describe_column(label, df[label]) for label in df.columns]


def _protocol_of(path: Path) -> int:
    head = path.read_bytes()[:2]
    return head[1] if head[:1] == b"\x80" else 0


def _versions() -> dict:
    import numpy
    import pandas

    try:
        import pyarrow

        pa = pyarrow.__version__
    except ImportError:
        pa = None
    return {"pandas": pandas.__version__, "numpy": numpy.__version__, "pyarrow": pa}


def write_fixtures_here(out: Path) -> None:
    """Inside a venv: write every frame with every writer into `out`."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    versions = _versions()
    for frame_name, (make, error) in FRAMES.items():
        obj = make()
        rows, columns = describe(obj)
        writers = [("to_pickle", "to_pickle", None), ("dump-p2", "pickle.dump", 2),
                   ("dump-p4", "pickle.dump", 4), ("dump-p5", "pickle.dump", 5)]
        for suffix, writer, protocol in writers:
            path = out / f"{frame_name}.{suffix}.pkl"
            if protocol is None:
                if isinstance(obj, pd.DataFrame):
                    obj.to_pickle(path)
                else:
                    pd.to_pickle(obj, path)
            else:
                with open(path, "wb") as f:
                    pickle.dump(obj, f, protocol=protocol)
            expected = {
                **versions,
                "protocol": _protocol_of(path),
                "writer": writer,
                "frame": frame_name,
                "rows": rows,
                "columns": columns,
                "error": error,
            }
            # Trust, but verify: what the pickle loads back as (in this very
            # pandas) must be what we describe.
            with open(path, "rb") as f:
                back = pickle.load(f)
            if describe(back) != (rows, columns):
                raise SystemExit(f"{path}: loads back differently from what was pickled")
            text = json.dumps(expected, indent=1, ensure_ascii=False, allow_nan=False)
            (out / f"{frame_name}.{suffix}.expected.json").write_text(text + "\n", encoding="utf-8")

    # Vector columns the converter must refuse, each with the message it must
    # give: written once (reference versions, to_pickle), since what is
    # refused is the cells, not the pickle's layout. The expected.json lists
    # no columns (nothing is compared but the error).
    if out.name != REFERENCE_COMBO:
        return
    for frame_name, (make, error) in refused_frames().items():
        obj = make()
        path = out / f"{frame_name}.to_pickle.pkl"
        obj.to_pickle(path)
        expected = {**versions, "protocol": _protocol_of(path), "writer": "to_pickle",
                    "frame": frame_name, "rows": len(obj), "columns": [], "error": error}
        text = json.dumps(expected, indent=1, ensure_ascii=False, allow_nan=False)
        (out / f"{frame_name}.to_pickle.expected.json").write_text(text + "\n", encoding="utf-8")


# -- the large stand-in and the sample (reference layout, reference versions) --

SYLLABLES = ["al", "be", "cor", "da", "el", "fa", "gen", "hu", "io", "ja", "ka",
             "lo", "mi", "no", "or", "pi", "qua", "ro", "si", "ta", "ul", "vi",
             "wo", "xe", "yu", "zo"]
SUFFIXES = ["", " Inc", " LLC", " Ltd", " GmbH", " Group", " Labs", " Software",
            " Solutions", " Technologies", " Systems", " Studio"]


def company_names(count: int, rng) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        k = int(rng.integers(2, 4))
        word = "".join(SYLLABLES[int(i)] for i in rng.integers(0, len(SYLLABLES), k))
        name = word.capitalize() + SUFFIXES[int(rng.integers(0, len(SUFFIXES)))]
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def write_reference_like(path: Path, rows: int, dim: int, seed: int, companies: int,
                         id_prefix: str = "job") -> None:
    """The reference layout at scale: bulk numpy generation, then to_pickle.
    `id_prefix` names the ids (uuid5 of `<prefix>-<row>`): pickles meant to be
    one data set take different prefixes, so their ids differ."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = np.array(company_names(companies, rng), dtype=object)
    # A few companies post a lot, most post a little (Zipf-like weights).
    weights = 1.0 / (np.arange(companies) + 5.0)
    weights /= weights.sum()
    company_idx = rng.choice(companies, size=rows, p=weights)
    exp = np.array([f"{i}y" for i in range(11)], dtype=object)[
        rng.choice(11, size=rows, p=np.array([8, 10, 12, 13, 12, 11, 10, 8, 6, 5, 5]) / 100)]
    english = np.array(ENGLISH_LEVELS, dtype=object)[rng.integers(0, len(ENGLISH_LEVELS), rows)]
    keyword = np.array(KEYWORDS, dtype=object)[rng.integers(0, len(KEYWORDS), rows)]
    ids = np.array(_gen_ids(rows, id_prefix), dtype=object)
    df = pd.DataFrame({
        "id": ids,
        "Company Name": names[company_idx],
        "Exp Years": exp,
        "English Level": english,
        "Primary Keyword": keyword,
    })
    # Unit-norm vectors, generated and normalised in slabs to bound memory.
    vectors = np.empty((rows, dim), dtype=np.float64)
    slab = 65536
    for start in range(0, rows, slab):
        block = rng.standard_normal((min(slab, rows - start), dim))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start:start + len(block)] = block
    # One 1-D array per row, like `df["job_post_vectors"] = model.encode(...)`
    # rows; views pickle as their own contiguous copies.
    cells = np.empty(rows, dtype=object)
    for i in range(rows):
        cells[i] = vectors[i]
    df["job_post_vectors"] = cells
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_pickle(tmp)
    os.replace(tmp, path)


def inner_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inner", required=True, choices=["fixtures", "large"])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--rows", type=int)
    ap.add_argument("--dim", type=int)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--companies", type=int, default=3000)
    a = ap.parse_args(argv)
    if a.inner == "fixtures":
        write_fixtures_here(a.out)
    else:
        write_reference_like(a.out, a.rows, a.dim, a.seed, a.companies)


# ---------------------------------------------------------------------------
# Part 2: runs with the system Python (no pandas): venvs and hostile pickles
# ---------------------------------------------------------------------------

def venv_python(root: Path, combo: str) -> Path:
    """Create or reuse the venv for `combo` with exactly its pins."""
    pins = COMBOS[combo]
    vdir = root / combo
    py = vdir / "bin" / "python"
    stamp = vdir / "embedstream-pins.txt"
    want = "\n".join(pins) + "\n"
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    if vdir.exists():
        shutil.rmtree(vdir)
    print(f"[venv] creating {vdir} ({' '.join(pins)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(vdir)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--only-binary=:all:", *pins], check=True)
    stamp.write_text(want)
    return py


def freeze(py: Path) -> list[str]:
    out = subprocess.run([str(py), "-m", "pip", "freeze", "--disable-pip-version-check"],
                         check=True, capture_output=True, text=True).stdout
    return sorted(line for line in out.splitlines() if line.strip())


def pickle_globals(data: bytes) -> set[str]:
    """`module.name` of every global a pickle names (GLOBAL, INST, STACK_GLOBAL),
    found by disassembly only. STACK_GLOBAL's operands are tracked through the
    memo, which is all pandas/numpy ever use for them."""
    found: set[str] = set()
    memo: dict[int, object] = {}
    recent: list[object] = []
    for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.add(arg.replace(" ", "."))
            recent.append(None)
        elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            recent.append(arg)
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            recent.append(memo.get(int(arg)))
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = recent[-1] if recent else None
        elif name == "STACK_GLOBAL":
            mod, nm = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            found.add(f"{mod}.{nm}" if isinstance(mod, str) and isinstance(nm, str) else "?")
            recent.append(None)
        else:
            recent.append(None)
    return found


def write_globals_listing(dest: Path) -> None:
    """tests/fixtures/pandas/globals.md: which globals real pandas pickles name."""
    by_global: dict[str, set[str]] = {}
    for pkl in sorted(dest.glob("*/*.pkl")):
        for g in pickle_globals(pkl.read_bytes()):
            by_global.setdefault(g, set()).add(pkl.parent.name)
    lines = ["# Globals named by the real pandas fixtures", "",
             f"Generated by `{SOURCE}` (disassembly only). Every one of",
             "these must be understood by the converter; anything else may be refused.", "",
             "| global | combinations |", "| --- | --- |"]
    for g in sorted(by_global):
        lines.append(f"| `{g}` | {', '.join(sorted(by_global[g]))} |")
    (dest / "globals.md").write_text("\n".join(lines) + "\n")


def make_pandas_fixtures(root: Path, combos: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    versions_file = dest / "versions.json"
    versions = json.loads(versions_file.read_text()) if versions_file.exists() else {}
    for combo in combos:
        py = venv_python(root, combo)
        out = dest / combo
        if out.exists():
            shutil.rmtree(out)
        print(f"[fixtures] {combo} -> {out.relative_to(REPO) if out.is_relative_to(REPO) else out}",
              flush=True)
        subprocess.run(module_cmd("create_test_data", "--inner", "fixtures", "--out", out,
                                  python=py), check=True, env=child_env())
        versions[combo] = {"python": sys.version.split()[0], "pins": COMBOS[combo],
                           "pip_freeze": freeze(py)}
    versions_file.write_text(json.dumps(versions, indent=1, sort_keys=True) + "\n")
    write_globals_listing(dest)


# -- hostile pickles, written opcode by opcode --------------------------------

PWN = "touch /tmp/embedstream-pwned"


def _u(s: str) -> bytes:
    """SHORT_BINUNICODE / BINUNICODE of `s`."""
    b = s.encode("utf-8")
    if len(b) < 256:
        return b"\x8c" + bytes([len(b)]) + b
    return b"X" + struct.pack("<I", len(b)) + b


def _global(module: str, name: str) -> bytes:
    """GLOBAL opcode (text form, valid in every protocol)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _stack_global(module: str, name: str) -> bytes:
    """Protocol 4 STACK_GLOBAL."""
    return _u(module) + _u(name) + b"\x93"


P2 = b"\x80\x02"
P4 = b"\x80\x04"


def _call1(func: bytes, arg: bytes) -> bytes:
    """func(arg): push callable, push arg, TUPLE1, REDUCE."""
    return func + arg + b"\x85R"


def hostile_pickles() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, required error substring, description)."""
    H: dict[str, tuple[bytes, str, str]] = {}

    def add(name, data, err, why):
        H[name] = (data, err, why)

    eval_src = _u(f"__import__('os').system('{PWN}')")  # an expression for eval
    exec_src = _u(f"import os; os.system('{PWN}')")  # a statement for exec
    argv = b"](" + _u("touch") + _u("/tmp/embedstream-pwned") + b"e"  # ['touch', path]

    add("os_system.pkl", P2 + _call1(_global("os", "system"), _u(PWN)) + b".",
        "os.system", "GLOBAL os.system + REDUCE('touch /tmp/embedstream-pwned'), protocol 2")
    add("os_system_stack_global.pkl", P4 + _call1(_stack_global("os", "system"), _u(PWN)) + b".",
        "os.system", "the same through protocol 4 STACK_GLOBAL")
    add("posix_system.pkl", P2 + _call1(_global("posix", "system"), _u(PWN)) + b".",
        "posix.system", "posix.system: what os.system pickles as on Linux")
    add("os_system_inst.pkl", P2 + b"(" + _u(PWN) + b"ios\nsystem\n.",
        "os.system", "INST opcode (protocol 0 style class call) naming os.system")
    add("os_system_obj.pkl", P2 + b"(" + _global("os", "system") + _u(PWN) + b"o.",
        "os.system", "OBJ opcode: MARK, callable, args, OBJ")
    add("builtins_eval.pkl", P2 + _call1(_global("builtins", "eval"), eval_src) + b".",
        "builtins.eval", "builtins.eval of an os.system expression")
    add("builtins_exec.pkl", P4 + _call1(_stack_global("builtins", "exec"), exec_src) + b".",
        "builtins.exec", "builtins.exec of a statement")
    add("builtin_eval_py2_name.pkl", P2 + _call1(_global("__builtin__", "eval"), eval_src) + b".",
        "__builtin__.eval", "Python 2 spelling __builtin__.eval (mapped to builtins by Python 3)")
    add("subprocess_popen.pkl", P2 + _call1(_global("subprocess", "Popen"), argv) + b".",
        "subprocess.Popen", "subprocess.Popen(['touch', '/tmp/embedstream-pwned'])")
    add("subprocess_check_output.pkl",
        P4 + _call1(_stack_global("subprocess", "check_output"), argv) + b".",
        "subprocess.check_output", "subprocess.check_output([...])")
    add("numpy_load.pkl",
        P2 + _call1(_global("numpy", "load"), _u("/tmp/embedstream-evil.npy")) + b".",
        "numpy.load", "numpy.load: a nested loader (allow_pickle files run code)")
    add("getattr_chain.pkl",
        P2 + _global("builtins", "getattr")
        + b"(" + _call1(_global("builtins", "__import__"), _u("os")) + _u("system") + b"tR"
        + _u(PWN) + b"\x85R.",
        "builtins.__import__",
        "getattr(__import__('os'), 'system')('touch ...'): getattr itself must be allowed "
        "(pandas 3 pickles getattr(zoneinfo.ZoneInfo, '_unpickle')), __import__ is refused")
    add("getattr_on_allowed_class.pkl",
        P2 + _global("builtins", "getattr")
        + b"(" + _global("pandas.core.frame", "DataFrame") + _u("to_pickle") + b"tR.",
        "getattr", "getattr(pandas.core.frame.DataFrame, 'to_pickle'): getattr applied to "
        "anything but (zoneinfo.ZoneInfo, '_unpickle') is refused")
    add("getattr_zoneinfo_other_attr.pkl",
        P2 + _global("builtins", "getattr")
        + b"(" + _global("zoneinfo", "ZoneInfo") + _u("from_file") + b"tR"
        + _u("/etc/passwd") + b"\x85R.",
        "getattr", "getattr(zoneinfo.ZoneInfo, 'from_file')('/etc/passwd'): the allowed class, "
        "another attribute")
    inner = P2 + _call1(_global("os", "system"), _u(PWN)) + b"."
    add("dotted_name_escape.pkl",
        P4 + _call1(_stack_global("pandas", "io.pickle.pickle.loads"),
                    b"C" + bytes([len(inner)]) + inner) + b".",
        "pandas.io.pickle.pickle.loads",
        "protocol 4 dotted name walking from an allowed module to pickle.loads(os.system pickle)")
    add("dotted_name_builtins.pkl",
        P4 + _call1(_stack_global("builtins", "getattr.__self__.exec"), exec_src) + b".",
        "builtins.getattr.__self__.exec",
        "dotted name getattr.__self__.exec (= builtins.exec)")
    add("copyreg_reconstructor_popen.pkl",
        P2 + _global("copy_reg", "_reconstructor") + b"(" + _global("subprocess", "Popen")
        + _global("__builtin__", "object") + b"NtR.",
        "subprocess.Popen", "copy_reg._reconstructor (allowed) with a forbidden class")
    add("persistent_id.pkl", P2 + _u("evil") + b"Q" + b".",
        "persistent", "BINPERSID: persistent ids call a user hook")
    add("ext1_opcode.pkl", P2 + b"\x82\x01.",
        "EXT1", "EXT1: global from the copyreg extension registry")
    # -- broken length fields
    add("binunicode8_huge.pkl", P4 + b"\x8d" + struct.pack("<Q", 2**63 - 1) + b"abc.",
        "truncated", "BINUNICODE8 claiming 2^63-1 bytes")
    add("bytes8_huge.pkl", P4 + b"\x8e" + struct.pack("<Q", 2**64 - 1) + b"abc.",
        "truncated", "BINBYTES8 claiming 2^64-1 bytes")
    add("bytearray8_huge.pkl", b"\x80\x05\x96" + struct.pack("<Q", 2**62) + b"abc.",
        "truncated", "BYTEARRAY8 claiming 2^62 bytes")
    add("binbytes_huge.pkl", P2 + b"B" + struct.pack("<I", 2**32 - 1) + b"abc.",
        "truncated", "BINBYTES claiming 4 GiB")
    add("frame_huge.pkl", P4 + b"\x95" + struct.pack("<Q", 2**63) + b"K\x01.",
        "truncated", "FRAME claiming 2^63 bytes")
    add("truncated_mid_opcode.pkl", P2 + b"X" + struct.pack("<I", 10) + b"abc",
        "truncated", "BINUNICODE cut inside its payload, no STOP")
    add("no_stop.pkl", P2 + b"]q\x00(K\x01K\x02e", "truncated",
        "a valid list with the final STOP missing")
    # -- nesting
    depth = 100_000
    add("deep_nesting_lists.pkl", P2 + b"]" * depth + b"a" * (depth - 1) + b".",
        "nest", "a list nested 100,000 deep (EMPTY_LIST x N, APPEND x N-1)")
    add("deep_nesting_tuples.pkl", P2 + b"(" * depth + b"t" * depth + b".",
        "nest", "a tuple nested 100,000 deep (MARK x N, TUPLE x N)")
    add("deep_nesting_dicts.pkl", P4 + (b"}" + _u("k")) * depth + b"}" + b"s" * depth + b".",
        "nest", "a dict nested 100,000 deep ({'k': {'k': ...}})")
    # -- memo abuse
    add("memo_get_unset.pkl", P2 + b"]j" + struct.pack("<I", 7) + b".",
        "memo", "LONG_BINGET of index 7, never PUT")
    add("memo_get_huge.pkl", P2 + b"]j" + struct.pack("<I", 2**32 - 1) + b".",
        "memo", "LONG_BINGET 4294967295, never PUT")
    add("memo_put_huge.pkl", P2 + b"]r" + struct.pack("<I", 2**32 - 1)
        + b"j" + struct.pack("<I", 2**32 - 1) + b".",
        "memo", "LONG_BINPUT 4294967295 (a Vec-backed memo would allocate 4G slots); "
        "pickle always numbers the memo densely, so an index beyond the memo size is refused")
    add("memo_binget_empty.pkl", P2 + b"h\x00.",
        "memo", "BINGET 0 on an empty memo")
    # -- not a DataFrame / not a pickle
    add("not_a_frame_int.pkl", P4 + b"K*.", "DataFrame",
        "a valid pickle of the int 42: nothing to convert")
    add("protocol_6.pkl", b"\x80\x06K\x01.", "protocol",
        "PROTO 6: a protocol this converter does not know")
    add("empty.pkl", b"", "empty", "a zero-byte file")
    add("png_header.pkl",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
        b"\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\nIDATx\x9cc\x00\x01\x00\x00\x05\x00\x01"
        b"\r\n-\xb4\x00\x00\x00\x00IEND\xaeB`\x82",
        "not a pickle", "a 1x1 PNG image")
    add("text_file.pkl",
        b"id,Company Name,Exp Years\nabc,Acme,2y\n", "not a pickle",
        "a CSV text file named .pkl (starts with 'i', the INST opcode)")
    return H


def _replace_first_string(data: bytes, needle: str, payload: bytes) -> bytes:
    """Replace the opcode that pushes string `needle` with `payload` (any opcodes
    that leave one object on the stack), fixing the enclosing FRAME length."""
    frame_pos = frame_len = None
    for op, arg, pos in pickletools.genops(io.BytesIO(data)):
        if op.name == "FRAME":
            frame_pos, frame_len = pos, arg
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8") and arg == needle:
            enc = needle.encode()
            header = {"SHORT_BINUNICODE": 2, "BINUNICODE": 5, "BINUNICODE8": 9}[op.name]
            end = pos + header + len(enc)
            out = data[:pos] + payload + data[end:]
            delta = len(payload) - (end - pos)
            if frame_pos is not None and frame_pos + 9 + frame_len > pos:
                out = (out[:frame_pos + 1] + struct.pack("<Q", frame_len + delta)
                       + out[frame_pos + 9:])
            return out
    raise SystemExit(f"string {needle!r} not found in the source pickle")


def make_hostile(dest: Path, pandas_dir: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.pkl"):
        old.unlink()
    H = hostile_pickles()
    # One payload hidden as a cell of a real pandas 2.1.4 DataFrame pickle: the
    # first `id` string is replaced by os.system(...). Everything around it is
    # a well-formed DataFrame, so a reader that builds first and checks later
    # would already have run the command.
    first_id = str(uuid.uuid5(ID_NAMESPACE, "job-0"))
    for src_name, out_name, glob_bytes in [
        ("reference.to_pickle.pkl", "hidden_in_dataframe_p5.pkl",
         _stack_global("os", "system")),
        ("reference.dump-p2.pkl", "hidden_in_dataframe_p2.pkl", _global("os", "system")),
    ]:
        src = pandas_dir / REFERENCE_COMBO / src_name
        if not src.exists():
            raise SystemExit(f"{src} is missing: make the pandas fixtures first")
        data = _replace_first_string(src.read_bytes(), first_id,
                                     glob_bytes + _u(PWN) + b"\x85R")
        H[out_name] = (data, "os.system",
                       f"pandas 2.1.4 {src_name} with the first `id` cell replaced by "
                       "os.system('touch /tmp/embedstream-pwned')")
    real = (pandas_dir / REFERENCE_COMBO / "reference.to_pickle.pkl").read_bytes()
    H["truncated_real.pkl"] = (real[: len(real) // 2], "truncated",
                               "the first half of pandas 2.1.4 reference.to_pickle.pkl")
    H["truncated_real_last_byte.pkl"] = (real[:-1], "truncated",
                                         "pandas 2.1.4 reference.to_pickle.pkl without its STOP")

    expected = {}
    lines = [
        "# Hostile and broken pickles",
        "",
        f"Written opcode by opcode by `{SOURCE} --hostile-only` (never by",
        "pickling a live object). Each command payload is `touch /tmp/embedstream-pwned`:",
        "a test that feeds these to the converter should also assert that this file",
        "does not exist afterwards.",
        "",
        "The converter must refuse every file, without running, importing or allocating",
        "anything the file asks for, with an error whose message contains the substring",
        "below (case-sensitive). `expected.json` holds the same mapping for tests.",
        "Refused globals are named `module.name` as written in the pickle.",
        "",
        "| file | bytes | error must contain | what it is |",
        "| --- | ---: | --- | --- |",
    ]
    for name in sorted(H):
        data, err, why = H[name]
        (dest / name).write_bytes(data)
        expected[name] = err
        lines.append(f"| `{name}` | {len(data)} | `{err}` | {why} |")
    (dest / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    (dest / "README.md").write_text("\n".join(lines) + "\n")
    # Every file that claims to be a well-formed pickle must disassemble
    # cleanly: its refusal must come from the allow-list, not a parse error.
    malformed_ok = {"truncated", "memo", "nest", "not a pickle", "empty", "protocol"}
    for name, (data, err, _) in H.items():
        if err in malformed_ok:
            continue
        try:
            for _ in pickletools.genops(io.BytesIO(data)):
                pass
        except Exception as e:  # pragma: no cover - a generator bug
            raise SystemExit(f"hostile fixture {name} does not parse: {e}")
    print(f"[hostile] {len(H)} files -> {dest}", flush=True)


# ---------------------------------------------------------------------------

def run_large(root: Path, out: Path, rows: int, dim: int, seed: int, companies: int) -> None:
    py = venv_python(root, REFERENCE_COMBO)
    subprocess.run(module_cmd("create_test_data", "--inner", "large", "--out", out,
                              "--rows", rows, "--dim", dim, "--seed", seed,
                              "--companies", companies, python=py), check=True, env=child_env())
    print(f"[large] {out}: {rows} rows x {dim}, {out.stat().st_size:,} bytes", flush=True)


def check_committed(root: Path, combos: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_pandas_fixtures(root, combos, tmp / "pandas")
        make_hostile(tmp / "hostile", tmp / "pandas")
        bad = 0
        for base, committed in [(tmp / "pandas", PANDAS_FIXTURES), (tmp / "hostile", HOSTILE)]:
            for f in sorted(base.rglob("*")):
                if f.is_dir() or f.name == "versions.json":
                    continue
                rel = f.relative_to(base)
                c = committed / rel
                if not c.exists() or c.read_bytes() != f.read_bytes():
                    print(f"DIFFERS: {c}")
                    bad += 1
        print("all fixtures reproduce byte for byte" if not bad else f"{bad} files differ")
        return 1 if bad else 0


def main() -> int:
    if "--inner" in sys.argv:
        inner_main(sys.argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv-root", type=Path, default=REPO / ".venv-testdata")
    ap.add_argument("--combo", action="append", choices=list(COMBOS))
    ap.add_argument("--fixtures-only", action="store_true")
    ap.add_argument("--hostile-only", action="store_true")
    ap.add_argument("--check", action="store_true",
                    help="regenerate in a temp dir and compare with the committed files")
    ap.add_argument("--sample", action="store_true",
                    help="write data/sample.pkl (1,000 rows x 384, pandas 2.1.4)")
    ap.add_argument("--large", action="store_true",
                    help="write the reference-sized stand-in (pandas 2.1.4, to_pickle)")
    ap.add_argument("--rows", type=int, default=141_897)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--companies", type=int, default=None,
                    help="distinct company names (default 3000, 300 for --sample)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    root = a.venv_root.resolve()
    combos = a.combo or list(COMBOS)
    if a.large:
        out = a.out or REPO / "bench-data" / f"reference-{a.rows}x{a.dim}.pkl"
        run_large(root, out.resolve(), a.rows, a.dim, a.seed, a.companies or 3000)
        return 0
    if a.sample:
        out = a.out or REPO / "data" / "sample.pkl"
        run_large(root, out.resolve(), 1000, 384, 1, a.companies or 300)
        return 0
    if a.check:
        return check_committed(root, combos)
    if not a.hostile_only:
        make_pandas_fixtures(root, combos, PANDAS_FIXTURES)
    if not a.fixtures_only:
        make_hostile(HOSTILE, PANDAS_FIXTURES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
