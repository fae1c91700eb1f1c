"""Peer of `christmas-bench replay`: a trades CSV loaded into PostgreSQL with asyncpg, as a
Python user would write it: the `csv` module reads the file, each line becomes a tuple, and
`copy_records_to_table` (binary COPY) sends them over one connection while the file is read.

The CSV is the one `christmas-ingest replay` reads:
`time,symbol,price,volume,side,exchange_seq`, times RFC 3339 in UTC.

Prints one JSON line: the driver's and Python's versions, rows loaded and seconds (from
before the file is opened to the COPY's end; the bench times the whole process too)."""

import argparse
import asyncio
import csv
import datetime
import json
import platform
import time

import asyncpg

COLUMNS = ["time", "symbol", "price", "volume", "side", "exchange_seq"]


def rows(path):
    parse = datetime.datetime.fromisoformat
    with open(path, newline="") as f:
        lines = csv.reader(f)
        header = next(lines)
        if [h.strip().lower() for h in header] != COLUMNS:
            raise SystemExit(f"{path}: expected the header {','.join(COLUMNS)}, got {header}")
        for t, symbol, price, volume, side, seq in lines:
            yield (parse(t), symbol, float(price), float(volume), side, int(seq))


async def load(dsn, path):
    conn = await asyncpg.connect(dsn)
    try:
        start = time.perf_counter()
        status = await conn.copy_records_to_table(
            "market_data", records=rows(path), columns=COLUMNS
        )
        return int(status.split()[-1]), time.perf_counter() - start
    finally:
        await conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", required=True)
    p.add_argument("--csv", required=True)
    a = p.parse_args()
    n, secs = asyncio.run(load(a.dsn, a.csv))
    print(json.dumps({"peer": "asyncpg", "version": asyncpg.__version__,
                      "python": platform.python_version(), "rows": n, "seconds": secs}))


if __name__ == "__main__":
    main()
