"""Check a running embedstream server's Arrow Flight service with pyarrow.flight.

    python -m embedstream_py.flight_check --server HOST:PORT --data CONVERTED.arrow [--timeout 600]

Tickets (src/serve/flight.rs): `all` = the whole file, `after:<uuid>` = the rows
whose key is greater than <uuid> (it need not be in the file); anything else is
INVALID_ARGUMENT. Checks, each against the file read with pyarrow:
  list_flights lists one flight with the file's schema and row count;
  get_flight_info (path descriptor) has the schema, total_records and an
  endpoint whose ticket streams the whole file; get_schema matches;
  do_get(`all`) equals the file (schema incl. metadata, every column);
  do_get(`after:<key>`) after the first, a middle and the last key, and after
  an absent key, equals the matching slice; malformed tickets are refused
  with INVALID_ARGUMENT (which pyarrow.flight raises as ArrowInvalid).
Prints one line per check; exits 1 if any failed.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from embedstream_py.checklib import Checks
from embedstream_py.datafile import key_bytes as read_keys
from embedstream_py.datafile import read_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--server", required=True, help="HOST:PORT")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--timeout", type=float, default=600.0)
    a = ap.parse_args()

    import pyarrow as pa
    import pyarrow.flight as flight

    table = read_table(a.data)
    key_bytes = read_keys(table)
    n = table.num_rows

    client = flight.connect(f"grpc://{a.server}")
    try:
        client.wait_for_available(timeout=30)
    except Exception as e:  # pyarrow raises several types here
        print(f"error: no Flight server at {a.server}: {e}", file=sys.stderr)
        return 2
    opts = flight.FlightCallOptions(timeout=a.timeout)
    checks = Checks((AssertionError, flight.FlightError, pa.ArrowException),
                    lambda e: str(e) if isinstance(e, AssertionError)
                    else f"{type(e).__name__}: {e}")
    check = checks.check

    def same_schema(got: pa.Schema, what: str) -> None:
        # Compare fields (names, types incl. extension, nullability, field
        # metadata) and the schema metadata.
        if not got.equals(table.schema, check_metadata=True):
            raise AssertionError(f"{what} schema differs from the file's:\n{got}\n---\n"
                                 f"{table.schema}")

    def same_rows(got: pa.Table, start: int, what: str) -> None:
        want = table.slice(start)
        if got.num_rows != want.num_rows:
            raise AssertionError(f"{what}: {got.num_rows} rows, expected {want.num_rows}")
        same_schema(got.schema, what)
        for i, name in enumerate(table.schema.names):
            g, w = got.column(i), want.column(i)
            if not g.equals(w):
                gc, wc = g.combine_chunks(), w.combine_chunks()
                bad = next((r for r in range(len(gc)) if gc[r] != wc[r]), None)
                raise AssertionError(f"{what}: column {name!r} differs"
                                     + ("" if bad is None else f" first at row {start + bad}"))

    def list_flights():
        flights = list(client.list_flights(options=opts))
        assert len(flights) == 1, f"{len(flights)} flights listed, expected 1"
        f = flights[0]
        same_schema(f.schema, "list_flights")
        assert f.total_records == n, f"total_records {f.total_records}, the file has {n}"
        return f"1 flight {f.descriptor.path or f.descriptor.command}, {f.total_records} rows"

    def flight_info():
        descriptor = flight.FlightDescriptor.for_path(a.data.stem)
        info = client.get_flight_info(descriptor, options=opts)
        same_schema(info.schema, "get_flight_info")
        assert info.total_records == n, f"total_records {info.total_records}, the file has {n}"
        assert info.endpoints, "no endpoints"
        t = client.do_get(info.endpoints[0].ticket, options=opts).read_all()
        same_rows(t, 0, "the endpoint's ticket")
        return f"{len(info.endpoints)} endpoint(s), ticket {info.endpoints[0].ticket.ticket!r}"

    def get_schema():
        res = client.get_schema(flight.FlightDescriptor.for_path(a.data.stem), options=opts)
        same_schema(res.schema, "get_schema")
        return f"{len(res.schema)} fields"

    def do_get(ticket: bytes, start: int):
        def run():
            reader = client.do_get(flight.Ticket(ticket), options=opts)
            t = reader.read_all()
            same_rows(t, start, f"do_get({ticket!r})")
            return f"{t.num_rows} rows"
        return run

    def refused(ticket: bytes):
        def run():
            try:
                client.do_get(flight.Ticket(ticket), options=opts).read_all()
            except pa.ArrowInvalid as e:  # how pyarrow.flight surfaces INVALID_ARGUMENT
                return f"INVALID_ARGUMENT: {str(e).splitlines()[0][:100]}"
            except flight.FlightError as e:
                raise AssertionError(f"refused, but not with INVALID_ARGUMENT: "
                                     f"{type(e).__name__}: {str(e).splitlines()[0][:100]}")
            raise AssertionError("accepted")
        return run

    check("list_flights", list_flights)
    check("get_flight_info", flight_info)
    check("get_schema", get_schema)
    check("do_get all", do_get(b"all", 0))
    if n:
        ids = [str(uuid.UUID(bytes=k)) for k in (key_bytes[0], key_bytes[n // 2], key_bytes[-1])]
        check("do_get after the first key", do_get(f"after:{ids[0]}".encode(), 1))
        check(f"do_get after a middle key (row {n // 2})",
              do_get(f"after:{ids[1]}".encode(), n // 2 + 1))
        check("do_get after the last key", do_get(f"after:{ids[2]}".encode(), n))
        k = bytearray(key_bytes[n // 2])
        if k[15] < 255:
            k[15] += 1
            if n // 2 + 1 >= n or bytes(k) < key_bytes[n // 2 + 1]:
                check("do_get after an absent key between two rows",
                      do_get(f"after:{uuid.UUID(bytes=bytes(k))}".encode(), n // 2 + 1))
    check("do_get after a key below all keys",
          do_get(b"after:00000000-0000-7000-8000-000000000000", 0))
    for bad in [b"after:not-a-uuid", b"everything", b"\xff\xfe"]:
        check(f"do_get {bad!r} refused", refused(bad))

    client.close()
    return checks.finish("flight_check", f"{a.server} ({n} rows)")


if __name__ == "__main__":
    sys.exit(main())
