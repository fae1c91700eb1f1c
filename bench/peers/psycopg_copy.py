"""Peer of `christmas-bench ingest`: the rows loaded with psycopg 3's `COPY … FROM STDIN
(FORMAT BINARY)` and `write_row` (the fast path its documentation shows: binary, with
`set_types`), one connection per slice, each on its own thread. This is what a Python user
would write instead of embedding Christmas."""

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg

import rows as common


def _copy(conn, rows, part):
    cols = ", ".join(rows.columns)
    with conn.cursor() as cur:
        with cur.copy(f"COPY {rows.table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(rows.types)
            for row in part:
                copy.write_row(row)
    conn.commit()


def load(dsn, rows, parts):
    conns = [psycopg.connect(dsn) for _ in parts]
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(len(parts)) as pool:
            list(pool.map(lambda cp: _copy(cp[0], rows, cp[1]), zip(conns, parts)))
        return time.perf_counter() - start
    finally:
        for c in conns:
            c.close()


def sql(dsn, statement):
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(statement)
        return cur.fetchone()[0] if cur.description else None


if __name__ == "__main__":
    common.main("psycopg", psycopg.__version__, load, sql)
