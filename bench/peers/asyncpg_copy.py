"""Peer of `christmas-bench ingest`: the rows loaded with asyncpg's
`copy_records_to_table` (binary COPY), one connection per slice, concurrently.
This is what a Python user would write instead of embedding Christmas."""

import asyncio
import time

import asyncpg

import rows as common


async def _load(dsn, rows, parts):
    conns = [await asyncpg.connect(dsn) for _ in parts]
    try:
        start = time.perf_counter()
        await asyncio.gather(*(
            c.copy_records_to_table(rows.table, records=p, columns=rows.columns)
            for c, p in zip(conns, parts)
        ))
        return time.perf_counter() - start
    finally:
        for c in conns:
            await c.close()


def load(dsn, rows, parts):
    return asyncio.run(_load(dsn, rows, parts))


async def _sql(dsn, statement):
    c = await asyncpg.connect(dsn)
    try:
        return await c.fetchval(statement)
    finally:
        await c.close()


def sql(dsn, statement):
    return asyncio.run(_sql(dsn, statement))


if __name__ == "__main__":
    common.main("asyncpg", asyncpg.__version__, load, sql)
