"""Shared by the Python peers of `christmas-bench ingest`: the rows file the bench writes,
the command line, the reset between runs, the row-count check and the timing.

Only the load is timed (each peer's `load` connects first, then times its COPY); reading the
file and building the Python rows is not.

Rows file: a header line `christmas-bench rows v1 <trade|quote> <count>`, then fixed-layout
little-endian records: trades `<q32sddcq` (time_ns, symbol NUL-padded, price, volume, side,
exchange_seq), quotes `<q32sdddd` (time_ns, symbol, bid, ask, bid_size, ask_size).
"""

import argparse
import datetime
import json
import platform
import struct
import sys
import time

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

LAYOUTS = {
    "trade": (
        "market_data",
        ["time", "symbol", "price", "volume", "side", "exchange_seq"],
        # char(1) is sent as text: binary COPY's bpchar and text formats are the same bytes,
        # and psycopg has no binary dumper for bpchar.
        ["timestamptz", "text", "float8", "float8", "text", "int8"],
        struct.Struct("<q32sddcq"),
    ),
    "quote": (
        "quotes",
        ["time", "symbol", "bid", "ask", "bid_size", "ask_size"],
        ["timestamptz", "text", "float8", "float8", "float8", "float8"],
        struct.Struct("<q32sdddd"),
    ),
}


class Rows:
    """The rows of one file, as the tuples a user would hand to their driver."""

    def __init__(self, path):
        with open(path, "rb") as f:
            magic = f.readline().decode().split()
            if magic[:3] != ["christmas-bench", "rows", "v1"]:
                raise SystemExit(f"{path}: not a christmas-bench rows file")
            self.kind, count = magic[3], int(magic[4])
            self.table, self.columns, self.types, layout = LAYOUTS[self.kind]
            data = f.read()
        td = datetime.timedelta
        rows = []
        if self.kind == "trade":
            for t, sym, price, volume, side, seq in layout.iter_unpack(data):
                rows.append(
                    (EPOCH + td(microseconds=t // 1000), sym.rstrip(b"\0").decode(),
                     price, volume, side.decode(), seq)
                )
        else:
            for t, sym, bid, ask, bsz, asz in layout.iter_unpack(data):
                rows.append(
                    (EPOCH + td(microseconds=t // 1000), sym.rstrip(b"\0").decode(),
                     bid, ask, bsz, asz)
                )
        if len(rows) != count:
            raise SystemExit(f"{path}: {len(rows)} rows, header says {count}")
        self.rows = rows

    def parts(self, n):
        """n contiguous, equal slices: how a user would split a load over n connections."""
        size = (len(self.rows) + n - 1) // n
        return [self.rows[i * size:(i + 1) * size] for i in range(n)]


def serve(peer, version, load, dsn, rows):
    """The mode christmas-bench uses: print `ready {json}`, then for each line `N` read on
    stdin load every row over N connections and print `{"connections": N, "seconds": s}`.
    The bench empties the table and checks its row count around each load, so the peers
    run interleaved with the other contenders, in the same minutes of the same run."""
    info = {"peer": peer, "version": version, "python": platform.python_version(),
            "kind": rows.kind, "rows": len(rows.rows)}
    print("ready " + json.dumps(info), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        n = int(line)
        secs = load(dsn, rows, rows.parts(n))
        print(json.dumps({"connections": n, "seconds": secs}), flush=True)


def main(peer, version, load, sql):
    """Standalone: runs `load(dsn, rows, parts) -> seconds` for every connection count and
    repeat, with `sql(dsn, statement)` (returning the first column of the first row, or
    None) for the reset and the count, and prints one JSON line of rows/s. With --serve,
    see `serve`."""
    p = argparse.ArgumentParser(description=f"{peer} peer of christmas-bench ingest")
    p.add_argument("--dsn", required=True)
    p.add_argument("--rows", required=True, help="rows file written by christmas-bench")
    p.add_argument("--serve", action="store_true",
                   help="load on request (one connection count per stdin line)")
    p.add_argument("--connections", default="2", help="comma-separated connection counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to wait after TRUNCATE and CHECKPOINT")
    p.add_argument("--warmup", action="store_true",
                   help="one unrecorded run before the measured ones")
    a = p.parse_args()
    rows = Rows(a.rows)
    if a.serve:
        serve(peer, version, load, a.dsn, rows)
        return
    counts = [int(c) for c in a.connections.split(",") if c]

    def reset():
        # The same reset as the Rust side's: empty tables, a checkpoint, a pause.
        sql(a.dsn, "TRUNCATE market_data, quotes, ingest_batches")
        sql(a.dsn, "CHECKPOINT")
        time.sleep(a.settle)

    def once(n):
        reset()
        secs = load(a.dsn, rows, rows.parts(n))
        got = sql(a.dsn, f"SELECT count(*) FROM {rows.table}")
        if got != len(rows.rows):
            raise SystemExit(f"{peer}: {got} rows in {rows.table}, expected {len(rows.rows)}")
        return len(rows.rows) / secs

    if a.warmup and counts:
        print(f"{peer}: warm-up, {counts[0]} connections: {once(counts[0]):.0f} rows/s",
              file=sys.stderr)
    rates = {}
    for n in counts:
        rates[str(n)] = []
        for r in range(a.repeats):
            rate = once(n)
            rates[str(n)].append(rate)
            print(f"{peer}: {n} connections, run {r + 1}: {rate:.0f} rows/s", file=sys.stderr)
    reset()
    print(json.dumps({
        "peer": peer,
        "version": version,
        "python": platform.python_version(),
        "kind": rows.kind,
        "rows": len(rows.rows),
        "rates": rates,
    }))
