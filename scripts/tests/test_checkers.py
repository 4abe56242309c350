"""Tests of the Python cross-checks themselves: each checker passes on a
correct file/server (Python reference implementations) and fails, saying why,
on every injected fault.

    .venv-check/bin/python -m pytest scripts/tests -q

(the venv from scripts/requirements-check.txt; scripts/pytest.ini puts
scripts/ on the module path). No Rust build is needed.
"""
from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embedstream_py import REPO, child_env, module_cmd, py_convert
from embedstream_py import create_test_data as ctd
from embedstream_py.datafile import Expected
from embedstream_py.stubs import stubs

FIXTURES = REPO / "tests" / "fixtures" / "pandas"


def run(module, *args, timeout=600):
    """Run `python -m embedstream_py.<module> ARGS`."""
    return subprocess.run(module_cmd(module, *args), capture_output=True, text=True,
                          timeout=timeout, env=child_env())


def spawn(module, *args, stderr=subprocess.STDOUT):
    """Start `python -m embedstream_py.<module> ARGS`, stdout piped."""
    return subprocess.Popen(module_cmd(module, *args), stdout=subprocess.PIPE, stderr=stderr,
                            text=True, env=child_env())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def convert(pkl: Path, out: Path, fmt: str = "ipc") -> Path:
    r = run("py_convert", pkl, out, "--format", fmt)
    assert r.returncode == 0, r.stderr
    return out


def table_of(pkl: Path) -> pa.Table:
    import pandas as pd

    return py_convert.to_table(pd.read_pickle(pkl), pkl.name, "uuid", False)


def write_ipc(table: pa.Table, out: Path) -> Path:
    py_convert.write(table, out, "ipc", 16)
    return out


def replace_col(table: pa.Table, name: str, arr) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i).with_type(arr.type), arr)


# ---------------------------------------------------------------------------
# check_output
# ---------------------------------------------------------------------------

POSITIVE = [
    ("pandas-2.1.4", "reference.to_pickle", "ipc"),
    ("pandas-1.5.3", "kitchen_sink.dump-p2", "ipc"),
    ("pandas-3.1.1-pyarrow", "kitchen_sink.to_pickle", "ipc"),
    ("pandas-3.1.1-nopyarrow", "list_of_dicts.dump-p4", "parquet"),
    ("pandas-2.2.3", "dict_of_lists.dump-p5", "ipc"),
    ("pandas-2.2.3", "empty.to_pickle", "ipc"),
]


@pytest.mark.parametrize("combo,stem,fmt", POSITIVE)
def test_check_output_accepts_a_faithful_file(tmp_path, combo, stem, fmt):
    pkl = FIXTURES / combo / f"{stem}.pkl"
    out = convert(pkl, tmp_path / f"out.{'parquet' if fmt == 'parquet' else 'arrow'}", fmt)
    r = run("check_output", out, pkl, "--expected",
            FIXTURES / combo / f"{stem}.expected.json", "--format", fmt)
    assert r.returncode == 0, r.stdout + r.stderr
    for reader in ("pyarrow", "polars", "duckdb", "pandas"):
        assert f"{reader}: OK" in r.stdout


def _ref():
    return FIXTURES / "pandas-2.1.4" / "reference.to_pickle.pkl"


def _ks():
    return FIXTURES / "pandas-2.1.4" / "kitchen_sink.to_pickle.pkl"


def m_string(t):
    v = t.column("Company Name").to_pylist()
    v[3] = v[3] + "!"
    return replace_col(t, "Company Name", pa.array(v, pa.string()))


def m_null_string(t):
    v = t.column("English Level").to_pylist()
    v[0] = None
    return replace_col(t, "English Level", pa.array(v, pa.string()))


def m_vector_ulp(t):
    c = t.column("job_post_vectors").combine_chunks()
    vals = c.flatten().to_numpy().copy()
    vals[5] = np.nextafter(vals[5], np.float32(1))
    arr = pa.FixedSizeListArray.from_arrays(pa.array(vals), type=c.type)
    return replace_col(t, "job_post_vectors", arr)


def _keys(t):
    k = t.column("uuid").combine_chunks()
    return np.frombuffer(k.buffers()[1], dtype=np.uint8)[: 16 * len(k)].reshape(-1, 16).copy()


def _set_keys(t, keys):
    n = len(keys)
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(keys.tobytes())])
    return replace_col(t, "uuid", arr)


def m_keys_swapped(t):
    k = _keys(t)
    k[[2, 3]] = k[[3, 2]]
    return _set_keys(t, k)


def m_keys_v4(t):
    k = _keys(t)
    k[7, 6] = (k[7, 6] & 0x0F) | 0x40
    return _set_keys(t, k)


def m_no_rows_meta(t):
    meta = dict(t.schema.metadata)
    del meta[b"embedstream.rows"]
    return t.replace_schema_metadata(meta)


def m_wrong_source(t):
    meta = dict(t.schema.metadata)
    meta[b"embedstream.source"] = b"other.pkl"
    return t.replace_schema_metadata(meta)


def m_column_order(t):
    names = t.schema.names
    order = [names[1], names[0], *names[2:]]
    return t.select(order)


def m_dropped_row(t):
    return pa.concat_tables([t.slice(0, 5), t.slice(6)]).replace_schema_metadata(
        {**t.schema.metadata, b"embedstream.rows": str(t.num_rows - 1).encode()})


def m_ts_ns(t):
    c = t.column("ts").combine_chunks()
    v = c.cast(pa.int64()).to_pylist()
    v[0] += 1
    return replace_col(t, "ts", pa.array(v, pa.int64()).cast(c.type))


def m_tz(t):
    c = t.column("ts_berlin").combine_chunks()
    return replace_col(t, "ts_berlin", c.cast(pa.int64()).cast(pa.timestamp("ns", tz="UTC")))


def m_category(t):
    c = t.column("color").combine_chunks()
    v = c.to_pylist()
    v[0] = "green" if v[0] != "green" else "red"
    return replace_col(t, "color", pa.array(v, pa.string()).dictionary_encode())


def m_float_bit(t):
    c = t.column("f64").combine_chunks()
    v = c.to_numpy(zero_copy_only=False).copy()
    v[0] = np.nextafter(v[0], np.inf)
    return replace_col(t, "f64", pa.array(v, mask=c.is_null().to_numpy(zero_copy_only=False)))


def m_int(t):
    v = t.column("i64").to_pylist()
    v[1] -= 1
    return replace_col(t, "i64", pa.array(v, pa.int64()))


def m_na_to_value(t):
    v = t.column("Int64").to_pylist()
    i = v.index(None)
    v[i] = 0
    return replace_col(t, "Int64", pa.array(v, pa.int64()))


def m_float32_vector_narrowed_values(t):
    c = t.column("veclist").combine_chunks()
    vals = c.flatten().to_numpy().copy()
    vals[0] = -vals[0]
    return replace_col(t, "veclist", pa.FixedSizeListArray.from_arrays(pa.array(vals), type=c.type))


MUTATIONS = [
    (_ref, m_string, "'Company Name': values differ"),
    (_ref, m_null_string, "'English Level': values differ"),
    (_ref, m_vector_ulp, "'job_post_vectors': vectors differ"),
    (_ref, m_keys_swapped, "not strictly increasing"),
    (_ref, m_keys_v4, "not version 7"),
    (_ref, m_no_rows_meta, "embedstream.rows is missing"),
    (_ref, m_wrong_source, "embedstream.source"),
    (_ref, m_column_order, "columns ["),
    (_ref, m_dropped_row, "rows, pandas has"),
    (_ks, m_ts_ns, "'ts': timestamps differ"),
    (_ks, m_tz, "time zone"),
    (_ks, m_category, "'color': values differ"),
    (_ks, m_float_bit, "'f64': values differ"),
    (_ks, m_int, "'i64': values differ"),
    (_ks, m_na_to_value, "'Int64': values differ"),
    (_ks, m_float32_vector_narrowed_values, "'veclist': vectors differ"),
]


@pytest.mark.parametrize("source,mutate,message", MUTATIONS,
                         ids=[m[1].__name__ for m in MUTATIONS])
def test_check_output_catches(tmp_path, source, mutate, message):
    pkl = source()
    out = write_ipc(mutate(table_of(pkl)), tmp_path / "bad.arrow")
    r = run("check_output", out, pkl)
    assert r.returncode == 1, r.stdout + r.stderr
    assert message in r.stderr, r.stderr


def test_check_output_refuses_an_error_fixture(tmp_path):
    pkl = FIXTURES / "pandas-2.1.4" / "reference.to_pickle.pkl"
    out = convert(pkl, tmp_path / "x.arrow")
    r = run("check_output", out, pkl, "--expected",
            FIXTURES / "pandas-2.1.4" / "ragged.to_pickle.expected.json")
    assert r.returncode == 2 and "must refuse" in r.stderr


# ---------------------------------------------------------------------------
# grpc_check and flight_check against the Python reference servers
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_arrow():
    d = Path(tempfile.mkdtemp(prefix="embedstream-test-"))
    return convert(REPO / "data" / "sample.pkl", d / "sample.arrow")


class Server:
    """py_server MODE (stream | flight) on a free port."""

    def __init__(self, mode, *args):
        self.port = free_port()
        self.proc = spawn("py_server", mode, "--port", self.port, *args)
        line = self.proc.stdout.readline()
        assert "py_server" in line, line

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


CHECKERS = [("grpc_check", "stream"), ("flight_check", "flight")]


@pytest.mark.parametrize("checker,mode", CHECKERS)
def test_checker_passes_on_a_correct_server(sample_arrow, checker, mode):
    with Server(mode, "--data", sample_arrow) as s:
        r = run(checker, "--server", f"127.0.0.1:{s.port}", "--data", sample_arrow)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout


@pytest.mark.parametrize("checker,mode,bug,message", [
    ("grpc_check", "stream", "skip-row", "row 500: server sent"),
    ("grpc_check", "stream", "wrong-vector", "component 383"),
    ("grpc_check", "stream", "ignore-resume", "resume after the first key"),
    ("grpc_check", "stream", "no-invalid", "expected INVALID_ARGUMENT, the stream completed"),
    ("grpc_check", "stream", "default-chunk", "chunks larger than 300"),
    ("flight_check", "flight", "skip-row", "999 rows, expected 1000"),
    ("flight_check", "flight", "wrong-vector", "schema differs"),
    ("flight_check", "flight", "ignore-resume", "1000 rows, expected 999"),
    ("flight_check", "flight", "no-invalid", "accepted"),
])
def test_checker_catches(sample_arrow, checker, mode, bug, message):
    with Server(mode, "--data", sample_arrow, "--bug", bug) as s:
        r = run(checker, "--server", f"127.0.0.1:{s.port}", "--data", sample_arrow)
    assert r.returncode == 1, r.stdout
    assert message in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# ingest_receiver with a grpcio client
# ---------------------------------------------------------------------------

def upload(port: int, data: Path, mode: str = "ok", package="com.alpha.backend.grpc",
           attempts: int = 3):
    import grpc

    pb2, _ = stubs()
    exp = Expected(data)

    def reqs():
        if mode != "no-metadata":
            yield pb2.IngestDataRequest(metadata=pb2.IngestMetadata(
                domain="recruit", file_name=data.name, vector_dimension=exp.dim))
        for s in range(0, exp.rows, 300):
            rows = [dict(id=exp.ids[r], company_name=exp.company[r], exp_years=exp.exp[r],
                         english_level=exp.english[r], primary_keyword=exp.keyword[r],
                         vector=[float(x) for x in exp.vectors[r]])
                    for r in range(s, min(s + 300, exp.rows))]
            if mode == "bad-dim":
                rows[0]["vector"].pop()
            if mode == "wrong-value" and s == 0:
                rows[3]["company_name"] += "!"
            if mode == "exp-string":
                rows[0]["exp_years"] = "2y"
            yield pb2.IngestDataRequest(data_chunk=json.dumps(rows).encode())

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.stream_unary(f"/{package}.EmbeddingStreamService/IngestDataStream",
                               request_serializer=pb2.IngestDataRequest.SerializeToString,
                               response_deserializer=pb2.IngestDataResponse.FromString)
        errors = []
        for _ in range(attempts):
            try:
                return call(reqs(), timeout=60), errors
            except grpc.RpcError as e:
                errors.append((e.code().name, e.details()))
                if e.code().name != "UNAVAILABLE":
                    break
        return None, errors


class Receiver:
    def __init__(self, tmp_path, *args):
        self.port = free_port()
        self.report = tmp_path / "report.json"
        self.proc = spawn("ingest_receiver", "--port", self.port, "--report", self.report,
                          *args, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        assert "listening" in line, line + self.proc.stderr.read()

    def state(self):
        return json.loads(self.report.read_text())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def test_ingest_receiver_accepts_and_compares(tmp_path, sample_arrow):
    with Receiver(tmp_path, "--data", sample_arrow, "--once", "--timeout", "120") as rv:
        resp, errors = upload(rv.port, sample_arrow)
        assert rv.proc.wait(timeout=60) == 0
        st = rv.state()
    assert errors == [] and resp.success and resp.received_chunks == 4
    assert st["rows"] == 1000 and st["matches_data"] is True and st["ids_unique"] is True


def test_ingest_receiver_fail_first_then_retry(tmp_path, sample_arrow):
    with Receiver(tmp_path, "--fail-first", "--package", "embedding") as rv:
        resp, errors = upload(rv.port, sample_arrow, package="embedding")
        time.sleep(0.3)
        st = rv.state()
    assert errors and errors[0][0] == "UNAVAILABLE" and resp.success
    assert st["failed_calls"] == 1 and st["successful_calls"] == 1
    assert [c["status"] for c in st["calls"]] == ["UNAVAILABLE", "OK"]


@pytest.mark.parametrize("mode,message", [
    ("no-metadata", "the first must be metadata"),
    ("bad-dim", "vector has 383 values"),
    ("exp-string", "exp_years '2y' is not an integer"),
])
def test_ingest_receiver_refuses(tmp_path, sample_arrow, mode, message):
    with Receiver(tmp_path) as rv:
        resp, errors = upload(rv.port, sample_arrow, mode)
        time.sleep(0.3)
        st = rv.state()
    assert resp is None and errors[0][0] == "INVALID_ARGUMENT" and message in errors[0][1]
    assert st["failed_calls"] == 1 and message in st["calls"][0]["error"]


def test_ingest_receiver_reports_a_wrong_upload(tmp_path, sample_arrow):
    with Receiver(tmp_path, "--data", sample_arrow, "--once", "--timeout", "120") as rv:
        upload(rv.port, sample_arrow, "wrong-value")
        assert rv.proc.wait(timeout=60) == 1
        st = rv.state()
    assert st["matches_data"] is False and st["data_mismatch"].startswith("row 3:")


def test_ingest_receiver_wrong_package_is_unimplemented(tmp_path, sample_arrow):
    with Receiver(tmp_path, "--package", "embedding") as rv:
        resp, errors = upload(rv.port, sample_arrow)
    assert resp is None and errors[0][0] == "UNIMPLEMENTED"


# ---------------------------------------------------------------------------
# the committed fixtures themselves
# ---------------------------------------------------------------------------

KINDS = {"string", "int", "uint", "float", "bool", "category", "datetime", "vector", "empty"}


def test_every_fixture_has_a_consistent_expected_json():
    pkls = sorted(FIXTURES.glob("*/*.pkl"))
    # Every frame with every writer in every combination, plus the vector
    # refusals written once (reference combination, to_pickle).
    refused = {f"{ctd.REFERENCE_COMBO}/{name}.to_pickle.pkl" for name in ctd.refused_frames()}
    assert len(pkls) == len(ctd.COMBOS) * len(ctd.FRAMES) * 4 + len(refused)
    assert refused <= {f"{p.parent.name}/{p.name}" for p in pkls}
    for pkl in pkls:
        exp = json.loads(pkl.with_name(pkl.name[:-4] + ".expected.json").read_text())
        assert exp["protocol"] == pkl.read_bytes()[1], pkl
        assert exp["writer"] in ("to_pickle", "pickle.dump")
        for col in exp["columns"]:
            assert col["kind"] in KINDS, (pkl, col["name"])
            assert len(col["values"]) == exp["rows"], (pkl, col["name"])


def test_hostile_fixtures_reproduce(tmp_path):
    ctd.make_hostile(tmp_path, FIXTURES)
    committed = REPO / "tests" / "fixtures" / "hostile"
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name for p in committed.iterdir())
    for name in made:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name
    expected = json.loads((committed / "expected.json").read_text())
    assert set(expected) == {n for n in made if n.endswith(".pkl")}


# ---------------------------------------------------------------------------
# refresh_check: a checkpoint on OLD resumes on the refreshed file
# ---------------------------------------------------------------------------

def py_refresh(old: Path, new_pkl: Path, out: Path, rekey: bool, state: Path,
               split: bool = False) -> Path:
    """NEW.pkl converted against OLD as `convert --previous OLD --match-on id`
    does (kept ids keep OLD's key, the others get fresh keys after OLD's last,
    in pickle order; sorted by key; the refresh counts in the metadata, from
    what `refresh_check prepare` did), or, with `rekey`, as a plain
    conversion. `split`: the first schema message's changed count differs
    from the footer's (a late value settled at one end only)."""
    import pandas as pd

    from embedstream_py.datafile import key_bytes, read_table

    df = pd.read_pickle(new_pkl)
    if rekey:
        return write_ipc(py_convert.to_table(df, new_pkl.name, "uuid", False), out)
    done = json.loads(state.read_text())
    counts = {"kept": len(df) - len(done["added"]), "added": len(done["added"]),
              "removed": len(done["removed"]), "changed": len(done["changed"])}
    t = read_table(old)
    old_key = dict(zip(t.column("id").to_pylist(), key_bytes(t)))
    added = [v for v in df["id"] if v not in old_key]
    last_ms = int.from_bytes(max(old_key.values())[:6], "big")
    fresh = iter(py_convert.uuid7_keys(len(added), start_ms=last_ms + 1))
    keys = np.stack([np.frombuffer(old_key[v], np.uint8) if v in old_key else next(fresh)
                     for v in df["id"]])
    table = py_convert.to_table(df, new_pkl.name, "uuid", False, keys=keys)
    order = sorted(range(len(df)), key=lambda i: keys[i].tobytes())
    meta = dict(table.schema.metadata or {})
    meta.update({f"embedstream.refresh.{k}".encode(): str(v).encode() for k, v in counts.items()})
    write_ipc(table.take(order).replace_schema_metadata(meta), out)
    if split:
        data = bytearray(out.read_bytes())
        value = str(counts["changed"]).encode()
        fb_string = len(value).to_bytes(4, "little") + value + b"\0"
        at = data.index(fb_string)  # the first schema message comes first
        wrong = str(counts["changed"] + 1).encode()
        assert len(wrong) == len(value)
        data[at + 4:at + 4 + len(value)] = wrong
        out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("rekey,split,messages", [
    (False, False, []),
    (True, False, ["kept rows got other keys than in OLD",
                   "resume with OLD's checkpoint inside the kept rows",
                   "resume with OLD's checkpoint at a removed row",
                   "resume with OLD's checkpoint at the last row, kept"]),
    (False, True, ["the first schema message and the footer differ in ['embedstream.refresh.changed']"]),
])
def test_refresh_check(tmp_path, sample_arrow, rekey, split, messages):
    state, new_pkl = tmp_path / "state.json", tmp_path / "new.pkl"
    common = ["--old", sample_arrow, "--state", state]
    with Server("stream", "--data", sample_arrow) as s:
        r = run("refresh_check", "prepare", "--server", f"127.0.0.1:{s.port}", *common,
                "--pickle", REPO / "data" / "sample.pkl", "--new-pickle", new_pkl)
    assert r.returncode == 0, r.stdout + r.stderr
    new = py_refresh(sample_arrow, new_pkl, tmp_path / "new.arrow", rekey, state, split)
    with Server("stream", "--data", new) as s:
        r = run("refresh_check", "verify", "--server", f"127.0.0.1:{s.port}", *common,
                "--new", new, "--timeout", 60)
    if not messages:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "refresh_check: all checks passed" in r.stdout
        assert r.stdout.count("\nok   resume with OLD's checkpoint") == 3, r.stdout
        return
    assert r.returncode == 1, r.stdout + r.stderr
    for m in messages:
        assert m in r.stderr, r.stderr
