"""Reads of vectors in bulk: binary COPY straight into one preallocated float32 array.

pgvector's binary format is `>HH` (dimension, unused) followed by big-endian float32s; with the
embedding id in front every COPY record has the same size, so a whole chunk of records is parsed
with one `np.frombuffer` and no Python object per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg
from sqlalchemy import Connection

_HEADER = b"PGCOPY\n\xff\r\n\x00"
_CHUNK = 8 << 20  # parse every ~8 MiB of received bytes


@dataclass(frozen=True, slots=True)
class VectorSet:
    ids: np.ndarray  # (n,) int64 embedding ids, ascending
    vectors: np.ndarray  # (n, dim) float32

    def __len__(self) -> int:
        return len(self.ids)


def _record_dtype(dim: int) -> np.dtype:
    return np.dtype(
        [
            ("nfields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i8"),
            ("vec_len", ">i4"),
            ("dim", ">u2"),
            ("unused", ">u2"),
            ("v", ">f4", (dim,)),
        ]
    )


def raw_connection(conn: Connection) -> psycopg.Connection:
    raw = conn.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError("simsearch drives Postgres with psycopg 3 (postgresql+psycopg://)")
    return raw


def copy_vectors(raw: psycopg.Connection, query: str, params: tuple[object, ...], *, dim: int, count: int) -> VectorSet:
    """Run `COPY (query) TO STDOUT (FORMAT BINARY)`; query selects (id bigint, vector) rows.

    `count` preallocates the arrays (the caller counts in the same snapshot); more rows grow them.
    """
    dtype = _record_dtype(dim)
    ids = np.empty(count, np.int64)
    vectors = np.empty((count, dim), np.float32)
    filled = 0
    pending = bytearray()
    started = False

    def take(final: bool) -> None:
        nonlocal filled, ids, vectors, started
        start = 0
        if not started:
            if len(pending) < 19:
                return
            if bytes(pending[:11]) != _HEADER:
                raise ValueError("not a binary COPY stream")
            start = 19 + int.from_bytes(pending[15:19], "big")
            started = True
        body = len(pending) - start
        if final:
            body -= 2  # the trailer: int16 -1
        n = body // dtype.itemsize
        if n:
            records = np.frombuffer(pending, dtype=dtype, count=n, offset=start)
            if (records["dim"] != dim).any():
                raise ValueError(f"stored vectors do not all have dimension {dim}")
            if filled + n > len(ids):
                grow = max(filled + n, 2 * len(ids))
                ids = np.resize(ids, grow)
                vectors = np.resize(vectors, (grow, dim))
            ids[filled : filled + n] = records["id"]
            vectors[filled : filled + n] = records["v"]
            filled += n
            del records  # release the view on `pending` before it is resized
        del pending[: start + n * dtype.itemsize]

    with raw.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)", params) as copy:
        for chunk in copy:
            pending += chunk
            if len(pending) >= _CHUNK:
                take(final=False)
    take(final=True)
    return VectorSet(ids=ids[:filled], vectors=vectors[:filled])


def read_service_vectors(
    conn: Connection, service_id: int, dim: int, *, after_id: int = 0, upto_id: int | None = None
) -> VectorSet:
    """All vectors of a service with after_id < id <= upto_id, ordered by id."""
    upper = upto_id if upto_id is not None else np.iinfo(np.int64).max
    raw = raw_connection(conn)
    where = "service_id = %s AND id > %s AND id <= %s"
    count_row = raw.execute(f"SELECT count(*) FROM embedding WHERE {where}", (service_id, after_id, upper)).fetchone()
    count = int(count_row[0]) if count_row else 0
    if count == 0:
        return VectorSet(ids=np.empty(0, np.int64), vectors=np.empty((0, dim), np.float32))
    return copy_vectors(
        raw,
        f"SELECT id, vector FROM embedding WHERE {where} ORDER BY id",
        (service_id, after_id, upper),
        dim=dim,
        count=count,
    )


_FEW = 4096  # up to this many recent vectors, one plain query beats counting first and COPY


def read_recent_vectors(conn: Connection, service_id: int, dim: int, *, after_id: int) -> VectorSet:
    """The vectors added since an index was built (id > after_id): one round trip in the usual case
    of a few (or none), binary COPY when a large backlog has built up."""
    rows = (
        raw_connection(conn)
        .execute(
            "SELECT id, vector FROM embedding WHERE service_id = %s AND id > %s ORDER BY id LIMIT %s",
            (service_id, after_id, _FEW + 1),
        )
        .fetchall()
    )
    if len(rows) > _FEW:
        return read_service_vectors(conn, service_id, dim, after_id=after_id)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.empty((len(rows), dim), np.float32)
    for i, row in enumerate(rows):
        vectors[i] = row[1].to_numpy()  # pgvector's psycopg loader gives Vector objects
    return VectorSet(ids=ids, vectors=vectors)


def max_embedding_id(conn: Connection, service_id: int) -> int:
    row = (
        raw_connection(conn)
        .execute("SELECT coalesce(max(id), 0) FROM embedding WHERE service_id = %s", (service_id,))
        .fetchone()
    )
    return int(row[0]) if row else 0
