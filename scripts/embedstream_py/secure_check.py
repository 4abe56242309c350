"""Check a server started with TLS, a bearer token and metrics, with clients that are not ours.

    python -m embedstream_py.secure_check --server HOST:PORT --data CONVERTED.arrow
        --tls-ca CA.pem --token-file TOKENS [--server-name NAME]
        [--metrics http://HOST:PORT/metrics] [--timeout 600]

The server: `embedstream serve --data CONVERTED.arrow --tls-cert ... --tls-key ...
--auth-token-file TOKENS [--metrics-addr HOST:PORT]`, used by nobody else while
this runs (the metric checks compare counts before and after its own calls).
The token sent is the first non-comment line of TOKENS.

grpcio (ssl_channel_credentials with the CA, `authorization: Bearer` metadata):
  the full stream and a resume equal the file, on both package names; no
  token and a wrong token are UNAUTHENTICATED; health answers SERVING without
  a token; a plaintext channel gets nothing from the TLS port.
pyarrow.flight over grpc+tls (tls_root_certs, the header through
  FlightCallOptions(headers=...)): list_flights, get_flight_info, do_get(all)
  and do_get(after:<middle key>) equal the file; no header is refused with
  FlightUnauthenticatedError.
/metrics (with --metrics), parsed by the Prometheus Python client
  (prometheus_client.parser): the rows counters went up by exactly the rows
  this check pulled, per RPC; the finished and refused counters by exactly
  its calls; counters end in _total, the resume histogram has buckets, count
  and sum, every family has HELP; the file's rows; build info and process
  metrics are there.

Prints one line per check; exits 1 if any failed.
"""
from __future__ import annotations

import argparse
import sys
import urllib.request
from pathlib import Path

from embedstream_py import PROTO
from embedstream_py.checklib import Checks
from embedstream_py.datafile import GRPC_OPTIONS, Expected, read_table
from embedstream_py.grpc_check import Failure, compare_stream

ALIAS_PATH = "/com.alpha.backend.grpc.EmbeddingStreamService/StreamEmbedding"
HEALTH_PATH = "/grpc.health.v1.Health/Check"
# grpc.health.v1.HealthCheckResponse{status: SERVING}: field 1, varint 1.
SERVING = b"\x08\x01"

# The families the server exports (src/serve/metrics.rs) and their types.
FAMILIES = {
    "embedstream_streams_started": "counter",
    "embedstream_streams_active": "gauge",
    "embedstream_streams_finished": "counter",
    "embedstream_rows_sent": "counter",
    "embedstream_bytes_sent": "counter",
    "embedstream_requests_refused": "counter",
    "embedstream_resume_first_message_seconds": "histogram",
    "embedstream_file_rows": "gauge",
    "embedstream_file_bytes": "gauge",
    "embedstream_file_generation": "gauge",
    "embedstream_build_info": "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
}


def first_token(path: Path) -> str:
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    raise SystemExit(f"{path}: no token in it")


def parse(text: str) -> dict:
    """{family name: Metric} of a text exposition, via prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict, family: str, sample: str, **labels) -> float:
    """The value of `sample` in `family` whose labels include `labels` (0 if absent)."""
    f = families.get(family)
    if f is None:
        return 0.0
    found = [s.value for s in f.samples
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    if len(found) > 1:
        raise Failure(f"{sample}{labels} matches {len(found)} samples")
    return found[0] if found else 0.0


def metric_problems(before: str, after: str, expect: dict) -> list[str]:
    """What is wrong with two scrapes around this check's calls.

    `expect`: {"rows": {rpc: n}, "finished_ok": {rpc: n}, "refused": {code: n},
    "file_rows": n}: the exact deltas (and the file's rows)."""
    problems = []
    try:
        b, a = parse(before), parse(after)
    except ValueError as e:
        return [f"prometheus_client cannot parse the exposition: {e}"]
    for name, kind in FAMILIES.items():
        f = a.get(name)
        if f is None:
            problems.append(f"family {name} is missing")
            continue
        if f.type != kind:
            problems.append(f"{name} is a {f.type}, expected a {kind}")
        if not f.documentation:
            problems.append(f"{name} has no HELP text")
    for f in a.values():
        if f.type == "counter":
            bad = [s.name for s in f.samples if not s.name.endswith(("_total", "_created"))]
            if bad:
                problems.append(f"counter samples without _total: {sorted(set(bad))}")
        if f.type == "histogram":
            for rpc in {s.labels.get("rpc") for s in f.samples}:
                count = value(a, f.name, f.name + "_count", rpc=rpc)
                inf = value(a, f.name, f.name + "_bucket", rpc=rpc, le="+Inf")
                names = {s.name for s in f.samples if s.labels.get("rpc") == rpc}
                if names != {f.name + x for x in ("_bucket", "_count", "_sum")}:
                    problems.append(f"{f.name}{{rpc={rpc}}} has samples {sorted(names)}")
                elif count != inf:
                    problems.append(f"{f.name}{{rpc={rpc}}}: count {count} != +Inf bucket {inf}")

    def delta(family, sample, **labels):
        return value(a, family, sample, **labels) - value(b, family, sample, **labels)

    for rpc, n in expect.get("rows", {}).items():
        d = delta("embedstream_rows_sent", "embedstream_rows_sent_total", rpc=rpc)
        if d != n:
            problems.append(f"rows_sent_total{{rpc={rpc}}} went up by {d:g}, "
                            f"this check pulled {n} rows")
    for rpc, n in expect.get("finished_ok", {}).items():
        d = delta("embedstream_streams_finished", "embedstream_streams_finished_total",
                  rpc=rpc, code="OK")
        if d != n:
            problems.append(f"streams_finished_total{{rpc={rpc},code=OK}} went up by {d:g}, "
                            f"expected {n}")
    for code, n in expect.get("refused", {}).items():
        d = delta("embedstream_requests_refused", "embedstream_requests_refused_total",
                  code=code)
        if d != n:
            problems.append(f"requests_refused_total{{code={code}}} went up by {d:g}, "
                            f"expected {n}")
    if "file_rows" in expect:
        got = value(a, "embedstream_file_rows", "embedstream_file_rows")
        if got != expect["file_rows"]:
            problems.append(f"file_rows is {got:g}, the file has {expect['file_rows']}")
    for rpc in ("StreamEmbedding", "DoGet"):
        if value(a, "embedstream_streams_active", "embedstream_streams_active", rpc=rpc) != 0:
            problems.append(f"streams_active{{rpc={rpc}}} is not 0 after every call ended")
    build = a.get("embedstream_build_info")
    if build is None or not any(s.value == 1 and s.labels.get("version") for s in build.samples):
        problems.append("no embedstream_build_info{version=...} 1")
    return problems


def scrape(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        if r.status != 200:
            raise Failure(f"GET {url}: HTTP {r.status}")
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain"):
            raise Failure(f"GET {url}: Content-Type {ctype!r}, expected text/plain")
        return r.read().decode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--server", required=True, help="HOST:PORT of the TLS port")
    ap.add_argument("--data", required=True, type=Path, help="the converted .arrow file served")
    ap.add_argument("--tls-ca", required=True, type=Path, help="PEM CA of the server certificate")
    ap.add_argument("--token-file", required=True, type=Path)
    ap.add_argument("--server-name", default=None,
                    help="the name to check in the server certificate (default: the host)")
    ap.add_argument("--metrics", default=None, help="the server's http://HOST:PORT/metrics")
    ap.add_argument("--proto", type=Path, default=PROTO)
    ap.add_argument("--timeout", type=float, default=600.0, help="per call, seconds")
    a = ap.parse_args()

    import grpc
    import pyarrow as pa
    import pyarrow.flight as flight

    from embedstream_py.stubs import stubs

    exp = Expected(a.data)
    table = read_table(a.data)
    ca = a.tls_ca.read_bytes()
    token = first_token(a.token_file)
    auth = [("authorization", f"Bearer {token}")]
    pb2, pb2_grpc = stubs(a.proto)

    options = list(GRPC_OPTIONS)
    if a.server_name:
        options.append(("grpc.ssl_target_name_override", a.server_name))
    channel = grpc.secure_channel(a.server, grpc.ssl_channel_credentials(root_certificates=ca),
                                  options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
    except grpc.FutureTimeoutError:
        print(f"error: no TLS server at {a.server} trusting {a.tls_ca}", file=sys.stderr)
        return 2
    stub = pb2_grpc.EmbeddingStreamServiceStub(channel)
    alias = channel.unary_stream(ALIAS_PATH,
                                 request_serializer=pb2.StreamEmbeddingRequest.SerializeToString,
                                 response_deserializer=pb2.RowChunk.FromString)
    health = channel.unary_unary(HEALTH_PATH, request_serializer=None,
                                 response_deserializer=None)
    checks = Checks((Failure, grpc.RpcError, flight.FlightError, pa.ArrowException),
                    lambda e: f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError)
                    else str(e) if isinstance(e, Failure) else f"{type(e).__name__}: {e}")
    check = checks.check
    n = exp.rows
    mid = n // 2
    # The server answers TLS, so its metrics port is bound too.
    before = None
    if a.metrics:
        def first_scrape():
            nonlocal before
            before = scrape(a.metrics, 30)
            return f"{len(before)} bytes"
        check("metrics: first scrape", first_scrape)
    # What this check asks of the server, for the metric deltas.
    pulled = {"StreamEmbedding": 0, "DoGet": 0}
    finished_ok = {"StreamEmbedding": 0, "DoGet": 0}
    refusals = {"UNAUTHENTICATED": 0}

    def req(last: str = "", chunk: int = 0):
        return pb2.StreamEmbeddingRequest(last_processed_uuid=last, chunk_size=chunk)

    def stream(name, last, start, call):
        def run():
            it = call(req(last), timeout=a.timeout, metadata=auth)
            rows, sizes = compare_stream(exp, it, start, 300)
            pulled["StreamEmbedding"] += rows
            finished_ok["StreamEmbedding"] += 1
            return f"{rows} rows in {len([s for s in sizes if s])} chunks"
        check(name, run)

    stream("grpcio TLS+token: full stream", "", 0, stub.StreamEmbedding)
    if n:
        stream(f"grpcio TLS+token: resume after row {mid}", exp.ids[mid], mid + 1,
               stub.StreamEmbedding)
    stream("grpcio TLS+token: package com.alpha.backend.grpc", "", 0, alias)

    def refused(name, metadata, call):
        def run():
            try:
                for _ in call(req(), timeout=a.timeout, metadata=metadata):
                    pass
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise Failure(f"expected UNAUTHENTICATED, got {e.code().name}: {e.details()}")
                refusals["UNAUTHENTICATED"] += 1
                return f"UNAUTHENTICATED: {e.details()[:80]}"
            raise Failure("expected UNAUTHENTICATED, the stream completed")
        check(name, run)

    refused("grpcio TLS: no token -> UNAUTHENTICATED", None, stub.StreamEmbedding)
    refused("grpcio TLS: no token on com.alpha.backend.grpc -> UNAUTHENTICATED", None, alias)
    refused("grpcio TLS: wrong token -> UNAUTHENTICATED",
            [("authorization", f"Bearer {token}x")], stub.StreamEmbedding)
    refused("grpcio TLS: not a bearer header -> UNAUTHENTICATED",
            [("authorization", token)], stub.StreamEmbedding)

    def health_open():
        got = health(b"", timeout=30)
        if got != SERVING:
            raise Failure(f"health answered {got!r}, expected SERVING ({SERVING!r})")
        return "SERVING without a token"
    check("grpcio TLS: health needs no token", health_open)

    def plaintext_fails():
        plain = grpc.insecure_channel(a.server)
        try:
            for _ in pb2_grpc.EmbeddingStreamServiceStub(plain).StreamEmbedding(
                    req(), timeout=10, metadata=auth):
                raise Failure("a plaintext client received a chunk from the TLS port")
        except grpc.RpcError as e:
            return f"{e.code().name}"
        finally:
            plain.close()
        raise Failure("a plaintext stream completed against the TLS port")
    check("plaintext grpcio gets nothing from the TLS port", plaintext_fails)
    channel.close()

    # pyarrow.flight over grpc+tls, the bearer header through call options.
    kwargs = {"tls_root_certs": ca}
    if a.server_name:
        kwargs["override_hostname"] = a.server_name
    client = flight.connect(f"grpc+tls://{a.server}", **kwargs)
    with_token = flight.FlightCallOptions(
        timeout=a.timeout, headers=[(b"authorization", f"Bearer {token}".encode())])
    without = flight.FlightCallOptions(timeout=a.timeout)

    def same(got: pa.Table, start: int, what: str) -> None:
        want = table.slice(start)
        if got.num_rows != want.num_rows:
            raise Failure(f"{what}: {got.num_rows} rows, expected {want.num_rows}")
        if not got.schema.equals(table.schema, check_metadata=True):
            raise Failure(f"{what}: schema differs from the file's")
        if not got.equals(want):
            raise Failure(f"{what}: rows differ from the file's")

    def do_get(ticket: bytes, start: int, what: str):
        def run():
            got = client.do_get(flight.Ticket(ticket), options=with_token).read_all()
            same(got, start, what)
            pulled["DoGet"] += got.num_rows
            finished_ok["DoGet"] += 1
            return f"{got.num_rows} rows"
        return run

    def infos():
        flights = list(client.list_flights(options=with_token))
        if len(flights) != 1 or flights[0].total_records != n:
            raise Failure(f"list_flights: {[(f.total_records) for f in flights]}")
        # The descriptor ListFlights gives (the served file's name).
        info = client.get_flight_info(flights[0].descriptor, options=with_token)
        if info.total_records != n:
            raise Failure(f"get_flight_info: {info.total_records} records, expected {n}")
        return f"{n} records"
    check("pyarrow.flight grpc+tls+bearer: list_flights, get_flight_info", infos)
    check("pyarrow.flight grpc+tls+bearer: do_get(all)", do_get(b"all", 0, "do_get(all)"))
    if n:
        check(f"pyarrow.flight grpc+tls+bearer: do_get(after:<row {mid}>)",
              do_get(f"after:{exp.ids[mid]}".encode(), mid + 1, "do_get(after)"))

    def flight_refused():
        try:
            client.do_get(flight.Ticket(b"all"), options=without).read_all()
        except flight.FlightUnauthenticatedError as e:
            refusals["UNAUTHENTICATED"] += 1
            return f"FlightUnauthenticatedError: {str(e)[:80]}"
        raise Failure("do_get without the header returned the file")
    check("pyarrow.flight grpc+tls: no header -> FlightUnauthenticatedError", flight_refused)
    client.close()

    if a.metrics and before is not None:
        def metrics():
            after = scrape(a.metrics, 30)
            problems = metric_problems(before, after, {
                "rows": pulled, "finished_ok": finished_ok, "refused": refusals,
                "file_rows": n})
            if problems:
                raise Failure("; ".join(problems))
            return (f"rows {pulled}, finished OK {finished_ok}, refused {refusals}: "
                    "exact; conventions hold")
        check("metrics: parsed by prometheus_client, counts exact", metrics)

    return checks.finish("secure_check", f"{a.server} ({n} rows, TLS, token"
                         + (", metrics)" if a.metrics else ")"))


if __name__ == "__main__":
    sys.exit(main())
