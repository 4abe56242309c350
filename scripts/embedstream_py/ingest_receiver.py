"""A stand-in for the Batch Server's IngestDataStream, in grpcio (not tonic):
checks `embedstream upload` against an independent implementation, and is the
receiver of the upload benchmark.

    python -m embedstream_py.ingest_receiver --port P [--host 127.0.0.1]
        [--package embedding|com.alpha.backend.grpc ...] [--rows check|parse|count]
        [--report REPORT.json] [--fail-first] [--fail-always CODE]
        [--data CONVERTED.arrow] [--once] [--timeout S]

Each call must send IngestMetadata first (domain, file_name,
vector_dimension > 0), then data chunks only. A call that breaks this is
answered INVALID_ARGUMENT with the reason. A complete call is answered
success=true, received_chunks = the number of data chunks, message =
"received N rows".

--package P    serve IngestDataStream under P.EmbeddingStreamService; repeat
               for both names (default com.alpha.backend.grpc only: a call to
               the other name is UNIMPLEMENTED).
--rows MODE    how a data chunk is read:
               check (default) UTF-8 JSON arrays of objects with exactly the
                     RecruitRow fields `id` (a UUID), `company_name`,
                     `exp_years` (an integer), `english_level`,
                     `primary_keyword`, `vector` (numbers, as many as
                     vector_dimension); anything else is INVALID_ARGUMENT;
               parse json.loads of every chunk, rows = the array's length
                     (what a real receiver must at least do; bench.upload);
               count no JSON parsing: rows = occurrences of `"id":` (a C-speed
                     bytes.count; shows what upload itself can do).
               --parse-json is --rows parse.
--fail-first   the first call is aborted with UNAVAILABLE after its first data
               chunk (the client must retry the whole upload).
--fail-always CODE  every call is aborted with that status (e.g. UNAVAILABLE
               to see the client give up, INVALID_ARGUMENT to see it not retry).
--data FILE    (with --rows check) also compare every received row with the
               converted file: ids in file order, each field, vectors as
               float32 (parsed from JSON).
--once         exit after the first successful call: 0, or 1 if it differs from
               --data; 1 after --timeout seconds (default 600) without one.

After every call it prints the call as one JSON line (below), and rewrites the
--report file, if given:
  {"package", "listening", "rows_mode", "calls": [CALL, ...], "successful_calls",
   "failed_calls", "rows" (of the last successful call), "ids_unique" (null
   unless --rows check), "matches_data" (null without --data), "data_mismatch"
   (first difference, or null)}
  CALL = {"ok", "status", "error", "metadata": {"domain", "file_name",
   "vector_dimension"}, "chunks", "rows", "bytes", "first_id", "last_id",
   "seconds" (first message to last)}
Prints "listening on HOST:P" once ready.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from embedstream_py.datafile import MAX_MESSAGE, PACKAGES, Expected
from embedstream_py.py_server import grpc_serve
from embedstream_py.stubs import stubs

FIELDS = {"id", "company_name", "exp_years", "english_level", "primary_keyword", "vector"}


class Invalid(Exception):
    pass


def check_row(obj, dim: int, where: str) -> None:
    """Refuse (Invalid) a row that is not a RecruitRow object of `dim` values."""
    if not isinstance(obj, dict):
        raise Invalid(f"{where}: not a JSON object")
    keys = set(obj)
    if keys != FIELDS:
        raise Invalid(f"{where}: fields {sorted(keys)}, expected {sorted(FIELDS)}")
    try:
        uuid.UUID(obj["id"])
    except (ValueError, AttributeError, TypeError):
        raise Invalid(f"{where}: id {obj['id']!r} is not a UUID") from None
    for k in ("company_name", "english_level", "primary_keyword"):
        if not isinstance(obj[k], str):
            raise Invalid(f"{where}: {k} is {type(obj[k]).__name__}, expected a string")
    if not isinstance(obj["exp_years"], int) or isinstance(obj["exp_years"], bool):
        raise Invalid(f"{where}: exp_years {obj['exp_years']!r} is not an integer")
    v = obj["vector"]
    if not isinstance(v, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise Invalid(f"{where}: vector is not a list of numbers")
    if len(v) != dim:
        raise Invalid(f"{where}: vector has {len(v)} values, vector_dimension is {dim}")


def compare_with_data(exp: Expected, rows: list[dict]) -> str | None:
    """First difference between the uploaded rows and the file, or None."""
    if len(rows) != exp.rows:
        return f"{len(rows)} rows uploaded, the file has {exp.rows}"
    for r, obj in enumerate(rows):
        got = (obj["id"], obj["company_name"], obj["exp_years"], obj["english_level"],
               obj["primary_keyword"])
        want = exp.fields(r)
        if got != want:
            return f"row {r}: uploaded {got!r}, the file has {want!r}"
        v = np.asarray(obj["vector"], dtype=np.float64).astype(np.float32)
        w = exp.vectors[r]
        if v.shape != w.shape or not np.array_equal(v, w):
            return f"row {r}: vector differs from the file's (compared as float32)"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--package", action="append", choices=PACKAGES)
    ap.add_argument("--rows", choices=["check", "parse", "count"], default="check")
    ap.add_argument("--parse-json", dest="rows", action="store_const", const="parse")
    ap.add_argument("--report", type=Path, default=None)
    ap.add_argument("--fail-first", action="store_true")
    ap.add_argument("--fail-always", default=None, metavar="CODE")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--timeout", type=float, default=600.0)
    a = ap.parse_args()
    packages = a.package or ["com.alpha.backend.grpc"]
    if a.data and a.rows != "check":
        ap.error("--data compares rows: it needs --rows check")

    import grpc

    fail_always = None
    if a.fail_always:
        try:
            fail_always = grpc.StatusCode[a.fail_always.upper()]
        except KeyError:
            ap.error(f"unknown status code {a.fail_always!r}")
    expected = Expected(a.data) if a.data else None
    pb2, _ = stubs()

    lock = threading.Lock()
    done = threading.Event()
    state = {"package": ",".join(packages), "listening": f"{a.host}:{a.port}",
             "rows_mode": a.rows, "calls": [], "successful_calls": 0, "failed_calls": 0,
             "rows": None, "ids_unique": None, "matches_data": None, "data_mismatch": None}

    def write_report():
        if a.report is None:
            return
        tmp_path = a.report.with_name(a.report.name + ".tmp")
        tmp_path.write_text(json.dumps(state, indent=1) + "\n")
        tmp_path.replace(a.report)

    def read_chunk(raw: bytes, dim: int, where: str, ids: list, rows: list) -> int:
        """Rows in one data chunk, read as --rows says."""
        if a.rows == "count":
            return raw.count(b'"id":')
        try:
            chunk = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise Invalid(f"{where} is not UTF-8 JSON: {e}") from None
        if not isinstance(chunk, list):
            raise Invalid(f"{where} is not a JSON array")
        if a.rows == "check":
            for j, obj in enumerate(chunk):
                check_row(obj, dim, f"{where} row {j}")
                ids.append(obj["id"])
            if expected is not None:
                rows.extend(chunk)
        return len(chunk)

    def finish(call: dict, t0: float | None, failed: bool) -> None:
        """Record a finished call: counters, report, one JSON line (lock held)."""
        call["seconds"] = time.perf_counter() - t0 if t0 is not None else 0.0
        state["failed_calls" if failed else "successful_calls"] += 1
        write_report()
        print(json.dumps(call), flush=True)

    def ingest(request_iterator, context):
        call = {"ok": False, "status": None, "error": None, "metadata": None, "chunks": 0,
                "rows": 0, "bytes": 0, "first_id": None, "last_id": None, "seconds": None}
        ids: list[str] = []
        rows: list[dict] = []
        t0 = None
        with lock:
            attempt = len(state["calls"]) + 1
            state["calls"].append(call)
        try:
            for i, msg in enumerate(request_iterator):
                if t0 is None:
                    t0 = time.perf_counter()
                which = msg.WhichOneof("request_type")
                if i == 0:
                    if which != "metadata":
                        raise Invalid(f"message 1 carries {which}, the first must be metadata")
                    md = msg.metadata
                    call["metadata"] = {"domain": md.domain, "file_name": md.file_name,
                                        "vector_dimension": md.vector_dimension}
                    if md.vector_dimension <= 0:
                        raise Invalid(f"vector_dimension {md.vector_dimension} must be > 0")
                    if not md.domain:
                        raise Invalid("metadata.domain is empty")
                    continue
                if which != "data_chunk":
                    raise Invalid(f"message {i + 1} carries {which}; only the first may")
                raw = msg.data_chunk
                call["bytes"] += len(raw)
                call["rows"] += read_chunk(raw, md.vector_dimension,
                                           f"data chunk {call['chunks'] + 1}", ids, rows)
                call["chunks"] += 1
                if fail_always is not None:
                    context.abort(fail_always, f"ingest_receiver --fail-always {fail_always.name}")
                if a.fail_first and attempt == 1:
                    context.abort(grpc.StatusCode.UNAVAILABLE,
                                  "ingest_receiver --fail-first: simulated failure of the first "
                                  "call after its first data chunk")
            if call["metadata"] is None:
                raise Invalid("the call carried no message; the first must be metadata")
            if fail_always is not None:
                context.abort(fail_always, f"ingest_receiver --fail-always {fail_always.name}")
        except Invalid as e:
            call["status"], call["error"] = "INVALID_ARGUMENT", str(e)
            with lock:
                finish(call, t0, failed=True)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception:
            # context.abort raises; anything else is the client going away.
            code = context.code() if hasattr(context, "code") else None
            call["status"] = getattr(code, "name", None) or "ABORTED_OR_CANCELLED"
            with lock:
                finish(call, t0, failed=True)
            raise
        call["ok"], call["status"] = True, "OK"
        call["first_id"] = ids[0] if ids else None
        call["last_id"] = ids[-1] if ids else None
        with lock:
            state["rows"] = call["rows"]
            if a.rows == "check":
                state["ids_unique"] = len(set(ids)) == len(ids)
            if expected is not None:
                state["data_mismatch"] = compare_with_data(expected, rows)
                state["matches_data"] = state["data_mismatch"] is None
            finish(call, t0, failed=False)
        done.set()
        return pb2.IngestDataResponse(success=True, received_chunks=call["chunks"],
                                      message=f"received {call['rows']} rows")

    server = grpc_serve({"IngestDataStream": grpc.stream_unary_rpc_method_handler(
        ingest, request_deserializer=pb2.IngestDataRequest.FromString,
        response_serializer=pb2.IngestDataResponse.SerializeToString)},
        packages, a.port, 4, host=a.host)
    with lock:
        write_report()
    print(f"listening on {a.host}:{a.port} ("
          + ", ".join(f"{p}.EmbeddingStreamService/IngestDataStream" for p in packages)
          + f"; rows: {a.rows}; max message {MAX_MESSAGE >> 20} MiB)", flush=True)
    if a.once:
        ok = done.wait(timeout=a.timeout)
        time.sleep(0.2)  # let the response go out
        server.stop(grace=2).wait()
        if not ok:
            print(f"error: no successful upload within {a.timeout}s", file=sys.stderr)
            return 1
        if state["matches_data"] is False:
            print(f"error: the upload differs from {a.data}: {state['data_mismatch']}",
                  file=sys.stderr)
            return 1
        print(f"ingest_receiver: {state['rows']} rows received in "
              f"{state['successful_calls'] + state['failed_calls']} call(s)", flush=True)
        return 0
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
