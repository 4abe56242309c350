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

Where the time goes (client and server share the machine's cores): every pull
also records the CPU seconds (user + system) of the server process and of the
client, printed per GB of the Arrow file. --rust adds the same pulls with the
Rust client (`embedstream stream [--flight]`, a subprocess), so the server's
share of the TLS cost can be told from the Python clients'. --baseline-bin
BIN (repeatable) adds a server `tls-NAME` per binary (NAME: the file's name)
with the same TLS flags, interleaved with the others, for before/after
comparisons in one run. --no-metrics leaves the metrics server out.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
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


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def rust_pull(exe: Path, addr: str, pki_dir: Path | None, token_file: Path | None,
              flight: bool) -> float:
    """Seconds of one full pull with `embedstream stream` (output discarded)."""
    cmd = [str(exe), "stream", "--server", addr, "--log-level", "ERROR"]
    if flight:
        cmd.append("--flight")
    if pki_dir is not None:
        cmd += ["--tls-ca", str(pki_dir / "ca.pem"), "--tls-server-name", "localhost"]
    if token_file is not None:
        cmd += ["--token-file", str(token_file)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=C.child_env({"LOG_LEVEL": "ERROR"}))
    return time.perf_counter() - t0


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
    ap.add_argument("--rust", action="store_true",
                    help="also pull with the Rust client (embedstream stream [--flight])")
    ap.add_argument("--baseline-bin", type=Path, action="append", default=[],
                    help="also serve TLS with this binary (`tls-NAME`), for before/after")
    ap.add_argument("--no-metrics", action="store_true", help="leave out the metrics server")
    a = ap.parse_args()
    C.require_venv()
    exe = C.embedstream_bin()
    C.DATA_DIR.mkdir(exist_ok=True)
    data = ensure_arrow(a.rows, a.dim)
    gb = data.stat().st_size / 1e9
    work = Path(tempfile.mkdtemp(prefix="bench-secure-"))
    pki.make(work / "pki")
    ca = (work / "pki" / "ca.pem").read_bytes()
    tokens = work / "tokens.txt"
    tokens.write_text(TOKEN + "\n")
    print(f"binary {exe}; baselines {[str(b) for b in a.baseline_bin]}; file {data}; load {C.loadavg()}", flush=True)

    tls_flags = ["--tls-cert", str(work / "pki" / "server.pem"),
                 "--tls-key", str(work / "pki" / "server.key"),
                 "--auth-token-file", str(tokens)]
    servers = {"plain": start(exe, data, "plain", []), "tls": start(exe, data, "tls", tls_flags)}
    for base in a.baseline_bin:
        servers[f"tls-{base.name}"] = start(base, data, f"tls-{base.name}", tls_flags)
    if not a.no_metrics:
        servers["metrics"] = start(exe, data, "metrics",
                                   ["--metrics-addr", f"127.0.0.1:{C.free_port()}"])
    secure = {n for n in servers if n.startswith("tls")}
    cas = {n: (ca if n in secure else None) for n in servers}
    kinds = ["stream", "flight"] + (["rust-stream", "rust-flight"] if a.rust else [])
    rates: dict[str, dict[str, list[float]]] = {n: {k: [] for k in kinds} for n in servers}
    # CPU seconds per GB of the file, per pull: {server: {kind: [(server, client)]}}
    cpu: dict[str, dict[str, list[tuple[float, float]]]] = {
        n: {k: [] for k in kinds} for n in servers}

    def pull(name: str, kind: str) -> float:
        """One pull; its rate (rows/s, GB/s or 1/s) and CPU are recorded."""
        s = servers[name]
        srv0, own0, kids0 = proc_cpu(s.proc.pid), self_cpu(), children_cpu()
        if kind == "stream":
            rows, dt = stream_pull(s.addr, cas[name])
            rate = rows / dt
        elif kind == "flight":
            nbytes, dt = flight_pull(s.addr, cas[name])
            rate = nbytes / dt / 1e9
        else:
            dt = rust_pull(Path(s.cmd[0]), s.addr,
                           work / "pki" if name in secure else None,
                           tokens if name in secure else None, kind == "rust-flight")
            rate = gb / dt
        srv = proc_cpu(s.proc.pid) - srv0
        client = (self_cpu() - own0) + (children_cpu() - kids0)
        rates[name][kind].append(rate)
        cpu[name][kind].append((srv / gb, client / gb))
        return rate

    try:
        for name in servers:  # warm-up: page cache, stubs, connections
            stream_pull(servers[name].addr, cas[name])
            flight_pull(servers[name].addr, cas[name])
        for run in range(a.runs):
            for name in servers:
                for kind in kinds:
                    if name == "metrics" and kind != "stream":
                        continue
                    pull(name, kind)
            print(f"  run {run + 1}/{a.runs} (load {C.loadavg()}): " + ", ".join(
                f"{n} {rates[n]['stream'][-1]:,.0f} rows/s" for n in servers), flush=True)
    finally:
        for s in servers.values():
            s.stop()

    med = {n: {k: C.median(v) for k, v in r.items() if v} for n, r in rates.items()}
    tls_stream = C.ratio(med["tls"]["stream"], med["plain"]["stream"])
    tls_flight = C.ratio(med["tls"]["flight"], med["plain"]["flight"])
    print()
    rows = [
        ["StreamEmbedding (grpcio), rows/s", f"{med['plain']['stream']:,.0f}",
         f"{med['tls']['stream']:,.0f}", f"{tls_stream:.2f}x",
         C.verdict(tls_stream >= 0.8, tls_stream)],
        ["Flight do_get (pyarrow), GB/s", f"{med['plain']['flight']:.2f}",
         f"{med['tls']['flight']:.2f}", f"{tls_flight:.2f}x",
         C.verdict(tls_flight >= 0.8, tls_flight)],
    ]
    for kind, label in (("rust-stream", "StreamEmbedding (Rust client), GB/s"),
                        ("rust-flight", "Flight do_get (Rust client), GB/s")):
        if a.rust:
            r = C.ratio(med["tls"][kind], med["plain"][kind])
            rows.append([label, f"{med['plain'][kind]:.2f}", f"{med['tls'][kind]:.2f}",
                         f"{r:.2f}x", C.verdict(r >= 0.8, r)])
    print(C.table(rows, ["median of runs", "plaintext", "TLS + token", "TLS / plain",
                         "target >= 0.8x"]))
    for base in a.baseline_bin:
        b = f"tls-{base.name}"
        print()
        print(C.table([[k, f"{med[b][k]:.3g}", f"{med['tls'][k]:.3g}",
                        f"{C.ratio(med['tls'][k], med[b][k]):.2f}x"] for k in kinds],
                      ["TLS, median of runs", b, "this build", "this / that"]))
    print()
    cpu_med = {n: {k: (C.median([x[0] for x in v]), C.median([x[1] for x in v]))
                   for k, v in r.items() if v} for n, r in cpu.items()}
    print(C.table([[f"{n} {k}", f"{srv:.2f}", f"{cl:.2f}", f"{srv + cl:.2f}"]
                   for n, r in cpu_med.items() for k, (srv, cl) in r.items()],
                  ["CPU s per GB of file (median)", "server", "client", "both"]))
    if "metrics" in servers:
        metrics_stream = C.ratio(med["metrics"]["stream"], med["plain"]["stream"])
        print()
        print(C.table([
            ["StreamEmbedding (grpcio), rows/s", f"{med['plain']['stream']:,.0f}",
             f"{med['metrics']['stream']:,.0f}", f"{(1 - metrics_stream) * 100:+.1f}%",
             C.verdict(metrics_stream >= 0.98, metrics_stream)],
        ], ["median of runs", "no metrics", "--metrics-addr", "cost", "target <= 2%"]))
    else:
        metrics_stream = None
    C.save_results("secure", {"machine": C.machine_report(), "args": vars(a), "rates": rates,
                              "cpu_per_gb": cpu, "median": med, "tls_stream": tls_stream,
                              "tls_flight": tls_flight, "metrics_stream": metrics_stream,
                              "load_after": C.loadavg()})


if __name__ == "__main__":
    main()
