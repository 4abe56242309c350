"""Check that a grpcio client resumes across a refresh with a checkpoint taken on the old file.

    python -m embedstream_py.refresh_check prepare --server HOST:PORT --old OLD.arrow
        --pickle OLD.pkl --new-pickle NEW.pkl --state STATE.json
    embedstream convert NEW.pkl --previous OLD.arrow --match-on id -o LIVE --force
    python -m embedstream_py.refresh_check verify --server HOST:PORT --old OLD.arrow
        --new LIVE --state STATE.json [--timeout 60]

`prepare`, against a server serving OLD (OLD.arrow converted from OLD.pkl):
takes checkpoints with a grpcio StreamEmbedding client the way the Batch
Server does (the id of the last row received): after 400 rows of a stream of
chunks of 100 (then cancelled), after 300 more rows of a resumed stream, and
at the end of the stream. It asks Flight `DoAction("generation")` on the same
address for the generation served (when the server has no Flight, e.g. the
tests' py_server, the generation is not checked). Then it writes NEW.pkl with
pandas `to_pickle`, as a re-export of the same rows: the rows in a shuffled
order, the string columns as pandas 3's `str`, OLD's first row and the second
checkpoint's row removed with 2% more, 1% of the rows changed (a vector
element, some a company name) and 5% added (fresh ids, among the others).
STATE.json records the checkpoints and the edits.

`verify`, after the refresh: waits (at most --timeout) until the server's
first row is NEW's first row (OLD's first row was removed) and, with Flight,
until `DoAction("generation")` gives NEW's `embedstream.generation`. Then:
  - with Flight: the server reports OLD's generation + 1;
  - NEW (the file now served, read with pyarrow) kept OLD's key for every id
    in both, holds exactly OLD's ids minus the removed plus the added, gives
    the added rows keys greater than every OLD key, and the kept rows OLD's
    content unless they were changed (then another);
  - the server streams NEW, every row;
  - for each checkpoint, a stream resumed with it sends exactly NEW's rows
    whose key is greater, each once, in order and value for value, and they
    are the rows the Batch Server expects: OLD's rows after the checkpoint
    that were kept (OLD's order), then every added row (NEW.pkl's order).

Prints one line per check; exits 1 if a check failed, 2 if it could not run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from embedstream_py.checklib import Checks
from embedstream_py.datafile import GRPC_OPTIONS, Expected, plain, read_table
from embedstream_py.grpc_check import Failure, compare_stream
from embedstream_py.stubs import stubs

MATCH = "id"  # the source column the refresh matches on (--match-on id)
VECTOR = "job_post_vectors"
COMPANY = "Company Name"
STRINGS = ["id", "Company Name", "Exp Years", "English Level", "Primary Keyword"]
REMOVED, CHANGED, ADDED = 0.02, 0.01, 0.05
CHUNK = 100
META_GENERATION = "embedstream.generation"


def source_ids(path: Path) -> list[str]:
    return plain(read_table(path).column(MATCH)).to_pylist()


def generation(server: str, timeout: float = 10.0) -> int | None:
    """The generation the server reports over Flight, or None without Flight."""
    import pyarrow as pa
    import pyarrow.flight as flight

    client = flight.FlightClient(f"grpc://{server}")
    try:
        opts = flight.FlightCallOptions(timeout=timeout)
        body = next(iter(client.do_action(flight.Action("generation", b""), opts))).body
        return int(json.loads(body.to_pybytes())["generation"])
    except (pa.ArrowException, flight.FlightError, StopIteration, KeyError, TypeError,
            ValueError):
        return None
    finally:
        client.close()


class Client:
    def __init__(self, server: str, timeout: float):
        import grpc

        self.grpc = grpc
        self.pb2, pb2_grpc = stubs()
        self.channel = grpc.insecure_channel(server, options=GRPC_OPTIONS)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            print(f"error: no server at {server}", file=sys.stderr)
            raise SystemExit(2) from None
        self.stub = pb2_grpc.EmbeddingStreamServiceStub(self.channel)
        self.timeout = timeout

    def call(self, last: str, chunk: int):
        return self.stub.StreamEmbedding(
            self.pb2.StreamEmbeddingRequest(last_processed_uuid=last, chunk_size=chunk),
            timeout=self.timeout)

    def read(self, last: str, rows: int | None) -> list[str]:
        """Row ids of a stream resumed after `last` (chunks of CHUNK): the
        first `rows` (then the call is cancelled), or all."""
        ids: list[str] = []
        call = self.call(last, CHUNK)
        try:
            for chunk in call:
                ids.extend(r.id for r in chunk.rows)
                if rows is not None and len(ids) >= rows:
                    break
        finally:
            call.cancel()
        return ids

    def first_id(self) -> str | None:
        try:
            ids = self.read("", 1)
        except self.grpc.RpcError:  # e.g. UNAVAILABLE between generations
            return None
        return ids[0] if ids else None


# -- prepare -----------------------------------------------------------------

def make_new(pickle: Path, out: Path, old_ids: list[str], keep: set[str], remove: set[str],
             seed: int) -> dict:
    """NEW.pkl from OLD.pkl's rows (see the module doc), the ids in `keep`
    kept, those in `remove` removed; returns the edits."""
    import pandas as pd

    df = pd.read_pickle(pickle)  # our own data/sample.pkl: trusted
    if list(df[MATCH]) != old_ids:
        raise SystemExit(f"{pickle} is not the pickle OLD was converted from "
                         f"(its {MATCH!r} column differs from OLD's)")
    n = len(df)
    rng = np.random.default_rng(seed)
    must_go = [i for i, v in enumerate(old_ids) if v in remove]
    free = np.array([i for i, v in enumerate(old_ids) if v not in keep and v not in remove])
    removed = sorted(set(must_go) | set(rng.choice(free, int(n * REMOVED), replace=False).tolist()))
    kept = np.setdiff1d(np.arange(n), removed)
    changed = sorted(rng.choice(kept, int(n * CHANGED), replace=False).tolist())
    vectors = df[VECTOR].to_numpy(copy=True)
    company = df[COMPANY].to_numpy(copy=True)
    for j, i in enumerate(changed):
        v = np.array(vectors[i], dtype=np.float64, copy=True)
        v[0] += 0.01  # survives the float32 narrowing
        vectors[i] = v
        if j % 2:
            company[i] = f"{company[i]} (changed)"
    df[VECTOR] = vectors
    df[COMPANY] = company
    new = df.drop(index=removed)
    added = int(n * ADDED)
    dim = len(vectors[0])
    picks = rng.integers(0, n, added)
    fresh = rng.standard_normal((added, dim))
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    extra = pd.DataFrame({c: df[c].to_numpy()[picks] for c in STRINGS[1:]})
    extra.insert(0, MATCH, [f"refresh-check-added-{i:04d}" for i in range(added)])
    cells = np.empty(added, dtype=object)
    for i in range(added):
        cells[i] = fresh[i]
    extra[VECTOR] = cells
    new = pd.concat([new, extra[list(df.columns)]], ignore_index=True)
    new = new.iloc[rng.permutation(len(new))].reset_index(drop=True)  # a re-export's order
    for c in STRINGS:
        new[c] = new[c].astype("str")  # as pandas 3 exports strings
    tmp = out.with_name(out.name + ".tmp")
    new.to_pickle(tmp)
    tmp.replace(out)
    added_ids = set(extra[MATCH])
    return {"removed": [old_ids[i] for i in removed],
            "changed": [old_ids[i] for i in changed],
            "added": [v for v in new[MATCH] if v in added_ids]}  # NEW.pkl's order


def prepare(a) -> int:
    old = Expected(a.old)
    old_src = source_ids(a.old)
    if old.rows <= 7 * CHUNK:
        print(f"error: {a.old} has {old.rows} rows; the checkpoints need more than {7 * CHUNK}",
              file=sys.stderr)
        return 2
    client = Client(a.server, a.timeout)
    gen = generation(a.server)
    # The checkpoints, as the Batch Server takes them: the last id received.
    first = client.read("", 4 * CHUNK)
    if first[:4 * CHUNK] != old.ids[:4 * CHUNK]:
        print(f"error: {a.server} does not serve {a.old} (its first rows differ)", file=sys.stderr)
        return 2
    cp_kept = first[4 * CHUNK - 1]
    cp_removed = client.read(cp_kept, 3 * CHUNK)[-1]
    cp_last = client.read(cp_removed, None)[-1]
    row = {k: i for i, k in enumerate(old.ids)}
    cps = [("inside the kept rows", cp_kept), ("at a removed row", cp_removed),
           ("at the last row, kept", cp_last)]
    keep = {old_src[row[cp_kept]], old_src[row[cp_last]]}
    remove = {old_src[0], old_src[row[cp_removed]]}  # row 0: NEW's first row differs
    edits = make_new(a.pickle, a.new_pickle, old_src, keep, remove, a.seed)
    state = {"generation": gen, "old_rows": old.rows, "new_pickle": str(a.new_pickle),
             "checkpoints": [{"name": name, "key": k, "old_row": row[k], MATCH: old_src[row[k]]}
                             for name, k in cps],
             **edits}
    a.state.write_text(json.dumps(state, indent=1))
    for c in state["checkpoints"]:
        print(f"checkpoint {c['name']}: {c['key']} (OLD row {c['old_row']})")
    print(f"{a.new_pickle}: {old.rows - len(edits['removed']) + len(edits['added'])} rows, "
          f"{len(edits['removed'])} removed, {len(edits['changed'])} changed, "
          f"{len(edits['added'])} added; generation served: {gen}")
    return 0


# -- verify ------------------------------------------------------------------

def recording(chunks, ids: list[str]):
    """Pass the chunks on, noting every row id."""
    for chunk in chunks:
        ids.extend(r.id for r in chunk.rows)
        yield chunk


def verify(a) -> int:
    import grpc

    state = json.loads(a.state.read_text())
    old, new = Expected(a.old), Expected(a.new)
    old_src, new_src = source_ids(a.old), source_ids(a.new)
    new_gen = read_table(a.new).schema.metadata.get(META_GENERATION.encode())
    new_gen = int(new_gen) if new_gen is not None else None
    client = Client(a.server, a.timeout)
    checks = Checks((Failure, grpc.RpcError),
                    lambda e: f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError)
                    else str(e))

    def swapped():
        deadline = time.monotonic() + a.timeout
        want_gen = new_gen if new_gen is not None else "not " + str(state["generation"])
        seen = (None, None)
        while time.monotonic() < deadline:
            first = client.first_id()
            gen = generation(a.server) if state["generation"] is not None else None
            seen = (first, gen)
            if first == new.ids[0] and (state["generation"] is None or (
                    gen == new_gen if new_gen is not None else gen != state["generation"])):
                return (f"first row {first}" + (f", generation {state['generation']} -> {gen}"
                                               if gen is not None else ""))
            time.sleep(0.1)
        raise Failure(f"after {a.timeout:.0f}s the server's first row is {seen[0]} and its "
                      f"generation {seen[1]}; NEW's first row is {new.ids[0]}, generation "
                      f"{want_gen}")

    checks.check("the server serves NEW", swapped)
    if checks.failures:
        return checks.finish("refresh_check", a.server)

    old_key = dict(zip(old_src, old.key_bytes))
    old_row = {v: i for i, v in enumerate(old_src)}
    removed, changed, added = set(state["removed"]), set(state["changed"]), state["added"]

    def keys_kept():
        moved = [v for v, k in zip(new_src, new.key_bytes) if v in old_key and old_key[v] != k]
        if moved:
            raise Failure(f"{len(moved)} kept rows got other keys than in OLD, e.g. id {moved[0]}")
        want = (set(old_src) - removed) | set(added)
        if set(new_src) != want or len(new_src) != len(want):
            raise Failure(f"NEW holds {len(new_src)} rows ({len(set(new_src) - want)} unexpected, "
                          f"{len(want - set(new_src))} missing), expected {len(want)}")
        top = max(old.key_bytes)
        low = [v for v, k in zip(new_src, new.key_bytes) if v in set(added) and k <= top]
        if low:
            raise Failure(f"{len(low)} added rows have keys not after OLD's last, e.g. id {low[0]}")
        return f"{len(new_src) - len(added)} kept with OLD's keys, {len(added)} added after them"

    def content():
        bad = []
        for r, v in enumerate(new_src):
            if v not in old_row:
                continue
            o = old_row[v]
            same = (old.fields(o)[1:] == new.fields(r)[1:]
                    and np.array_equal(old.vectors[o], new.vectors[r], equal_nan=True))
            if same == (v in changed):
                bad.append(f"id {v} ({'changed' if v in changed else 'unchanged'}, "
                           f"{'same' if same else 'other'} content)")
        if bad:
            raise Failure(f"{len(bad)} kept rows: {', '.join(bad[:3])}")
        return f"{len(changed)} changed rows carry the new content, the others OLD's"

    if state["generation"] is not None:
        def next_generation():
            gen = generation(a.server)
            if gen != state["generation"] + 1:
                raise Failure(f"the server reports generation {gen} for NEW, "
                              f"expected OLD's {state['generation']} + 1")
            return f"generation {gen}"

        checks.check("NEW is served as OLD's next generation (Flight)", next_generation)
    def readers():
        # The file's schema is written twice (first message, footer); a
        # refresh settles its changed count into both after the rows.
        import polars as pl
        import pyarrow as pa

        with pa.memory_map(str(a.new)) as source:
            whole = source.read_buffer()
        footer = pa.ipc.open_file(whole).schema.metadata
        start = whole.to_pybytes()[:4096].index(b"\xff\xff\xff\xff")
        first = pa.ipc.open_stream(whole.slice(start)).schema.metadata
        if first != footer:
            diff = sorted(k.decode() for k in set(first) ^ set(footer)
                          | {k for k in first if first.get(k) != footer.get(k)})
            raise Failure(f"the first schema message and the footer differ in {diff}")
        want = {"kept": len(new_src) - len(added), "added": len(added),
                "removed": len(removed), "changed": len(changed)}
        got = {k: int(footer.get(f"embedstream.refresh.{k}".encode(), b"-1")) for k in want}
        if got != want:
            raise Failure(f"the metadata's refresh counts are {got}, the refresh made {want}")
        ids = pl.read_ipc(a.new)["id"].to_list()
        if ids != new_src:
            raise Failure("polars reads other ids than pyarrow")
        return f"pyarrow (file and stream) and polars agree; counts {want}"

    checks.check("NEW kept OLD's keys, dropped the removed rows, added the new ones", keys_kept)
    checks.check("NEW's schema and refresh counts read alike from both ends, by pyarrow and polars",
                 readers)
    checks.check("kept rows: changed content replaced, unchanged content as in OLD", content)

    def full():
        n, _ = compare_stream(new, client.call("", 0), 0, None)
        return f"{n} rows"

    checks.check("full stream of NEW", full)

    for cp in state["checkpoints"]:
        def resume(cp=cp):
            got: list[str] = []
            start = new.after(cp["key"])
            n, _ = compare_stream(new, recording(client.call(cp["key"], 0), got), start, None)
            by_key = dict(zip(new.ids, new_src))
            sent = [by_key[k] for k in got]
            want = [v for v in old_src[cp["old_row"] + 1:] if v not in removed] + added
            if sent != want:
                extra = len(set(sent) - set(want))
                missing = len(set(want) - set(sent))
                how = (f"{extra} not expected, {missing} missing" if extra or missing
                       else "in another order")
                raise Failure(f"sent {len(sent)} rows, expected {len(want)} (OLD's kept rows "
                              f"after it, then the {len(added)} added): {how}")
            if len(set(got)) != len(got):
                raise Failure("a row was sent twice")
            return f"{n} rows ({n - len(added)} kept after it + {len(added)} added)"

        checks.check(f"resume with OLD's checkpoint {cp['name']} ({cp['key']})", resume)
    return checks.finish("refresh_check", a.server)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="checkpoints on OLD, and NEW.pkl")
    p.add_argument("--pickle", required=True, type=Path, help="the pickle OLD was converted from")
    p.add_argument("--new-pickle", required=True, type=Path, help="where to write NEW.pkl")
    p.add_argument("--seed", type=int, default=9)
    v = sub.add_parser("verify", help="after the refresh: resume with OLD's checkpoints")
    v.add_argument("--new", required=True, type=Path, help="the refreshed file now served")
    for s in (p, v):
        s.add_argument("--server", required=True, help="HOST:PORT")
        s.add_argument("--old", required=True, type=Path, help="the converted file served first")
        s.add_argument("--state", required=True, type=Path, help="written by prepare")
        s.add_argument("--timeout", type=float, default=60.0,
                       help="per call, and for the new generation to be served (s)")
    a = ap.parse_args()
    return prepare(a) if a.cmd == "prepare" else verify(a)


if __name__ == "__main__":
    sys.exit(main())
