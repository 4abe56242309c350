"""Benchmark: the cost of TLS and of metrics on `embedstream serve`, same run.

Run from the repository root, with the benchmark venv and a release build,
on a quiet machine:

    PYTHONPATH=scripts .venv-bench/bin/python -m embedstream_py.bench.secure [--runs 5]
        [--rows 141897 --dim 384]

Three servers on the same Arrow file (bench.make_arrow, reference layout,
made or reused in bench-data/), started side by side and measured in turn,
run by run (interleaved, so drift hits all three alike):
  plain    `serve`
  tls      `serve --tls-cert --tls-key --auth-token-file` (a PKI made by
           embedstream_py.pki with openssl; ECDSA P-256; TLS 1.3)
  metrics  `serve --metrics-addr 127.0.0.1:PORT`
Clients, in this process, one fresh channel per pull:
  (a) StreamEmbedding, chunk 300, grpcio (every RowChunk parsed, rows
      counted; TLS: ssl_channel_credentials + the bearer metadata): rows/s.
  (b) pyarrow.flight do_get(all) (grpc:// or grpc+tls:// with the header):
      GB/s of Arrow buffers received.
Figures: the median of --runs after one warm-up pull each. Targets: tls >= 0.8x
plain for (a) and (b); metrics costs <= 2% of plain on (a) (ratio >= 0.98).
Nothing here is a pass/fail threshold: the verdicts are printed for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from embedstream_py import pki
from embedstream_py.bench import common as C
from embedstream_py.bench.serve import ensure_arrow
from embedstream_py.datafile import GRPC_OPTIONS

METHOD = "/embedding.EmbeddingStreamService/StreamEmbedding"
TOKEN = "bench-token"


def start(exe: Path, data: Path, name: str, extra: list[str]) -> C.Server:
    port = C.free_port()
    return C.Server(name, [str(exe), "serve", "--data", str(data), "--host", "127.0.0.1",
                           "--port", str(port)] + extra, port,
                    env={"LOG_LEVEL": "WARNING"}, ready_timeout=300)


def stream_pull(addr: str, ca: bytes | None) -> tuple[int, float]:
    """(rows, seconds) of one full StreamEmbedding pull on a fresh channel."""
    import grpc

    from embedstream_py.stubs import stubs

    pb2, _ = stubs()
    if ca is None:
        ch, md = grpc.insecure_channel(addr, options=GRPC_OPTIONS), None
    else:
        ch = grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=ca),
                                 options=GRPC_OPTIONS)
        md = [("authorization", f"Bearer {TOKEN}")]
    grpc.channel_ready_future(ch).result(timeout=30)
    call = ch.unary_stream(METHOD, request_serializer=pb2.StreamEmbeddingRequest.SerializeToString,
                           response_deserializer=pb2.RowChunk.FromString)
    rows = 0
    t0 = time.perf_counter()
    for msg in call(pb2.StreamEmbeddingRequest(chunk_size=300), timeout=1200, metadata=md):
        rows += len(msg.rows)
    dt = time.perf_counter() - t0
    ch.close()
    return rows, dt


def flight_pull(addr: str, ca: bytes | None) -> tuple[int, float]:
    """(bytes of Arrow buffers, seconds) of one do_get(all) on a fresh client."""
    import pyarrow.flight as fl

    if ca is None:
        c, opts = fl.connect(f"grpc://{addr}"), fl.FlightCallOptions(timeout=1200)
    else:
        c = fl.connect(f"grpc+tls://{addr}", tls_root_certs=ca)
        opts = fl.FlightCallOptions(timeout=1200,
                                    headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
    t0 = time.perf_counter()
    reader = c.do_get(fl.Ticket(b"all"), options=opts)
    nbytes = 0
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        nbytes += chunk.data.get_total_buffer_size()
    dt = time.perf_counter() - t0
    c.close()
    return nbytes, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=C.REF_ROWS)
    ap.add_argument("--dim", type=int, default=C.REF_DIM)
    a = ap.parse_args()
    C.require_venv()
    exe = C.embedstream_bin()
    C.DATA_DIR.mkdir(exist_ok=True)
    data = ensure_arrow(a.rows, a.dim)
    work = Path(tempfile.mkdtemp(prefix="bench-secure-"))
    pki.make(work / "pki")
    ca = (work / "pki" / "ca.pem").read_bytes()
    (work / "tokens.txt").write_text(TOKEN + "\n")
    print(f"binary {exe}; file {data}; load {C.loadavg()}", flush=True)

    servers = {
        "plain": start(exe, data, "plain", []),
        "tls": start(exe, data, "tls", [
            "--tls-cert", str(work / "pki" / "server.pem"),
            "--tls-key", str(work / "pki" / "server.key"),
            "--auth-token-file", str(work / "tokens.txt")]),
        "metrics": start(exe, data, "metrics", ["--metrics-addr", f"127.0.0.1:{C.free_port()}"]),
    }
    cas = {"plain": None, "tls": ca, "metrics": None}
    rates: dict[str, dict[str, list[float]]] = {n: {"stream": [], "flight": []} for n in servers}
    try:
        for name, s in servers.items():  # warm-up: page cache, stubs, connections
            stream_pull(s.addr, cas[name])
            flight_pull(s.addr, cas[name])
        for run in range(a.runs):
            for name, s in servers.items():
                rows, dt = stream_pull(s.addr, cas[name])
                rates[name]["stream"].append(rows / dt)
                if name != "metrics":
                    nbytes, dt = flight_pull(s.addr, cas[name])
                    rates[name]["flight"].append(nbytes / dt / 1e9)
            print(f"  run {run + 1}/{a.runs}: " + ", ".join(
                f"{n} {rates[n]['stream'][-1]:,.0f} rows/s" for n in servers), flush=True)
    finally:
        for s in servers.values():
            s.stop()

    med = {n: {k: C.median(v) for k, v in r.items()} for n, r in rates.items()}
    tls_stream = C.ratio(med["tls"]["stream"], med["plain"]["stream"])
    tls_flight = C.ratio(med["tls"]["flight"], med["plain"]["flight"])
    metrics_stream = C.ratio(med["metrics"]["stream"], med["plain"]["stream"])
    print()
    print(C.table([
        ["StreamEmbedding (grpcio), rows/s", f"{med['plain']['stream']:,.0f}",
         f"{med['tls']['stream']:,.0f}", f"{tls_stream:.2f}x",
         C.verdict(tls_stream >= 0.8, tls_stream)],
        ["Flight do_get (pyarrow), GB/s", f"{med['plain']['flight']:.2f}",
         f"{med['tls']['flight']:.2f}", f"{tls_flight:.2f}x",
         C.verdict(tls_flight >= 0.8, tls_flight)],
    ], ["median of runs", "plaintext", "TLS + token", "TLS / plain", "target >= 0.8x"]))
    print()
    print(C.table([
        ["StreamEmbedding (grpcio), rows/s", f"{med['plain']['stream']:,.0f}",
         f"{med['metrics']['stream']:,.0f}", f"{(1 - metrics_stream) * 100:+.1f}%",
         C.verdict(metrics_stream >= 0.98, metrics_stream)],
    ], ["median of runs", "no metrics", "--metrics-addr", "cost", "target <= 2%"]))
    C.save_results("secure", {"machine": C.machine_report(), "args": vars(a), "rates": rates,
                              "median": med, "tls_stream": tls_stream, "tls_flight": tls_flight,
                              "metrics_stream": metrics_stream, "load_after": C.loadavg()})


if __name__ == "__main__":
    main()
