#!/usr/bin/env python3
"""A stand-in for the Batch Server's IngestDataStream, in grpcio (not tonic),
to check `embedstream upload` against an independent implementation.

    python scripts/ingest_receiver.py --port P --report REPORT.json
        [--package embedding|com.alpha.backend.grpc] [--fail-first]
        [--fail-always CODE] [--data CONVERTED.arrow] [--once] [--timeout S]

Each call must send IngestMetadata first (domain, file_name,
vector_dimension > 0), then data chunks only: UTF-8 JSON arrays of objects
with exactly the RecruitRow fields `id` (a UUID), `company_name`, `exp_years`
(an integer), `english_level`, `primary_keyword`, `vector` (numbers, as many as
vector_dimension). A call that breaks this is answered INVALID_ARGUMENT with
the reason. A complete call is answered success=true, received_chunks = the
number of data chunks, message = "received N rows".

--fail-first   the first call is aborted with UNAVAILABLE after its first data
               chunk (the client must retry the whole upload).
--fail-always CODE  every call is aborted with that status (e.g. UNAVAILABLE
               to see the client give up, INVALID_ARGUMENT to see it not retry).
--data FILE    also compare every received row with the converted file: ids in
               file order, each field, vectors as float32 (parsed from JSON).
--once         exit after the first successful call: 0, or 1 if it differs from
               --data; 1 after --timeout seconds (default 600) without one.

After every call the JSON report is rewritten:
  {"package", "listening", "calls": [{"ok", "status", "error", "metadata":
   {"domain", "file_name", "vector_dimension"}, "chunks", "rows", "bytes",
   "first_id", "last_id"}, ...], "successful_calls", "failed_calls",
   "rows" (of the last successful call), "ids_unique", "matches_data" (null
   without --data), "data_mismatch" (first difference, or null)}
Prints "listening on 127.0.0.1:P" once ready.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpc_check import REPO, load_stubs  # noqa: E402

FIELDS = {"id", "company_name", "exp_years", "english_level", "primary_keyword", "vector"}


class Invalid(Exception):
    pass


def load_data(path: Path):
    """The rows `embedstream upload` must send, as grpc_check sees them."""
    from grpc_check import DefaultMapping, Expected

    return Expected(path, DefaultMapping)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--package", choices=["embedding", "com.alpha.backend.grpc"],
                    default="com.alpha.backend.grpc")
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--fail-first", action="store_true")
    ap.add_argument("--fail-always", default=None, metavar="CODE")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--timeout", type=float, default=600.0)
    a = ap.parse_args()

    import grpc

    fail_always = None
    if a.fail_always:
        try:
            fail_always = grpc.StatusCode[a.fail_always.upper()]
        except KeyError:
            ap.error(f"unknown status code {a.fail_always!r}")
    expected = load_data(a.data) if a.data else None
    tmp = tempfile.TemporaryDirectory(prefix="embedstream-stubs-")
    pb2, _ = load_stubs(REPO / "proto" / "embedding_stream.proto", Path(tmp.name))

    lock = threading.Lock()
    done = threading.Event()
    state = {"package": a.package, "listening": f"{a.host}:{a.port}", "calls": [],
             "successful_calls": 0, "failed_calls": 0, "rows": None, "ids_unique": None,
             "matches_data": None, "data_mismatch": None}

    def write_report():
        tmp_path = a.report.with_name(a.report.name + ".tmp")
        tmp_path.write_text(json.dumps(state, indent=1) + "\n")
        tmp_path.replace(a.report)

    def check_row(obj, dim: int, where: str):
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

    def ingest(request_iterator, context):
        call = {"ok": False, "status": None, "error": None, "metadata": None, "chunks": 0,
                "rows": 0, "bytes": 0, "first_id": None, "last_id": None}
        ids: list[str] = []
        rows: list[dict] = []
        with lock:
            attempt = len(state["calls"]) + 1
            state["calls"].append(call)
        try:
            for i, msg in enumerate(request_iterator):
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
                try:
                    chunk = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise Invalid(f"data chunk {call['chunks'] + 1} is not UTF-8 JSON: {e}") \
                        from None
                if not isinstance(chunk, list):
                    raise Invalid(f"data chunk {call['chunks'] + 1} is not a JSON array")
                for j, obj in enumerate(chunk):
                    check_row(obj, md.vector_dimension, f"chunk {call['chunks'] + 1} row {j}")
                    ids.append(obj["id"])
                    if expected is not None:
                        rows.append(obj)
                call["chunks"] += 1
                call["rows"] += len(chunk)
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
                state["failed_calls"] += 1
                write_report()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception:
            # context.abort raises; anything else is the client going away.
            code = context.code() if hasattr(context, "code") else None
            call["status"] = getattr(code, "name", None) or "ABORTED_OR_CANCELLED"
            with lock:
                state["failed_calls"] += 1
                write_report()
            raise
        call["ok"], call["status"] = True, "OK"
        call["first_id"] = ids[0] if ids else None
        call["last_id"] = ids[-1] if ids else None
        with lock:
            state["successful_calls"] += 1
            state["rows"] = call["rows"]
            state["ids_unique"] = len(set(ids)) == len(ids)
            if expected is not None:
                state["data_mismatch"] = compare_with_data(expected, rows)
                state["matches_data"] = state["data_mismatch"] is None
            write_report()
        done.set()
        return pb2.IngestDataResponse(success=True, received_chunks=call["chunks"],
                                      message=f"received {call['rows']} rows")

    handler = grpc.stream_unary_rpc_method_handler(
        ingest, request_deserializer=pb2.IngestDataRequest.FromString,
        response_serializer=pb2.IngestDataResponse.SerializeToString)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 100 * 1024 * 1024)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        f"{a.package}.EmbeddingStreamService", {"IngestDataStream": handler})])
    if server.add_insecure_port(f"{a.host}:{a.port}") == 0:
        print(f"error: cannot listen on {a.host}:{a.port}", file=sys.stderr)
        return 2
    server.start()
    with lock:
        write_report()
    print(f"listening on {a.host}:{a.port} ({a.package}.EmbeddingStreamService/IngestDataStream)",
          flush=True)
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


def compare_with_data(exp, rows: list[dict]) -> str | None:
    """First difference between the uploaded rows and the file, or None."""
    if len(rows) != exp.rows:
        return f"{len(rows)} rows uploaded, the file has {exp.rows}"
    for r, obj in enumerate(rows):
        got = (obj["id"], obj["company_name"], obj["exp_years"], obj["english_level"],
               obj["primary_keyword"])
        want = (exp.ids[r], exp.company[r], exp.exp[r], exp.english[r], exp.keyword[r])
        if got != want:
            return f"row {r}: uploaded {got!r}, the file has {want!r}"
        v = np.asarray(obj["vector"], dtype=np.float64).astype(np.float32)
        w = exp.vectors[r]
        if v.shape != w.shape or not np.array_equal(v, w):
            return f"row {r}: vector differs from the file's (compared as float32)"
    return None


if __name__ == "__main__":
    sys.exit(main())
