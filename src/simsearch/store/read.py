"""Reads of vectors in bulk: binary COPY straight into one preallocated float32 array.

pgvector's binary format is `>HH` (dimension, unused) followed by big-endian float32s; with the
embedding id in front every COPY record has the same size, so a whole chunk of records is parsed
with one `np.frombuffer` and no Python object per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


def run_prepared(
    conn: Connection, query: str, params: Sequence[object] | Mapping[str, object], *, binary: bool = False
) -> list[Any]:
    """The rows of one prepared statement on the driver's connection (the hot paths: a search's statement,
    the service lookup). A connection that broke under it is invalidated, so that the pool drops it rather
    than fail to reset it (with a traceback in its log); the error goes on to the caller's 503."""
    try:
        return raw_connection(conn).execute(query, params, prepare=True, binary=binary).fetchall()
    except psycopg.OperationalError as exc:
        conn.invalidate(exc)
        raise


class _CopyParser:
    """Fixed-size binary COPY records, parsed chunk by chunk as bytes arrive (one `np.frombuffer` each)."""

    def __init__(self, dim: int, chunk_bytes: int) -> None:
        self.dim, self.chunk_bytes = dim, chunk_bytes
        self.dtype = _record_dtype(dim)
        self.pending = bytearray()
        self.started = False

    def feed(self, data: bytes | bytearray | memoryview, *, final: bool = False) -> VectorSet | None:
        """Parse what has arrived once `chunk_bytes` are pending (or at the end): its records as native arrays."""
        self.pending += data
        if not final and len(self.pending) < self.chunk_bytes:
            return None
        start = 0
        if not self.started:
            if len(self.pending) < 19:
                return None
            if bytes(self.pending[:11]) != _HEADER:
                raise ValueError("not a binary COPY stream")
            start = 19 + int.from_bytes(self.pending[15:19], "big")
            self.started = True
        body = len(self.pending) - start - (2 if final else 0)  # the trailer: int16 -1
        n = max(0, body // self.dtype.itemsize)
        records = np.frombuffer(self.pending, dtype=self.dtype, count=n, offset=start)
        if (records["dim"] != self.dim).any():
            raise ValueError(f"stored vectors do not all have dimension {self.dim}")
        chunk = VectorSet(ids=records["id"].astype(np.int64), vectors=records["v"].astype(np.float32))
        del records  # release the view on `pending` before it is resized
        del self.pending[: start + n * self.dtype.itemsize]
        return chunk if n else None


def iter_copy(
    raw: psycopg.Connection, query: str, params: tuple[object, ...], *, dim: int, chunk_bytes: int = _CHUNK
) -> Iterator[VectorSet]:
    """Run `COPY (query) TO STDOUT (FORMAT BINARY)`; query selects (id bigint, vector) rows. Yields them
    in chunks of about `chunk_bytes` as they arrive, so a caller can use each while the next is on its way."""
    parser = _CopyParser(dim, chunk_bytes)
    with raw.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)", params) as copy:
        for data in copy:
            chunk = parser.feed(data)
            if chunk is not None:
                yield chunk
    last = parser.feed(b"", final=True)
    if last is not None:
        yield last


def copy_vectors(raw: psycopg.Connection, query: str, params: tuple[object, ...], *, dim: int, count: int) -> VectorSet:
    """All rows of `iter_copy` in one pair of arrays. `count` preallocates them (the caller counts in the
    same snapshot); more rows grow them."""
    ids = np.empty(count, np.int64)
    vectors = np.empty((count, dim), np.float32)
    filled = 0
    for chunk in iter_copy(raw, query, params, dim=dim):
        n = len(chunk)
        if filled + n > len(ids):
            grow = max(filled + n, 2 * len(ids))
            ids = np.resize(ids, grow)
            vectors = np.resize(vectors, (grow, dim))
        ids[filled : filled + n] = chunk.ids
        vectors[filled : filled + n] = chunk.vectors
        filled += n
    return VectorSet(ids=ids[:filled], vectors=vectors[:filled])


_WHERE = "service_id = %s AND id > %s AND id <= %s"
_SELECT = f"SELECT id, vector FROM embedding WHERE {_WHERE} ORDER BY id"


def _bounds(service_id: int, after_id: int, upto_id: int | None) -> tuple[int, int, int]:
    return service_id, after_id, upto_id if upto_id is not None else int(np.iinfo(np.int64).max)


def count_service_vectors(conn: Connection, service_id: int, *, after_id: int = 0, upto_id: int | None = None) -> int:
    """How many vectors of a service have after_id < id <= upto_id."""
    query = f"SELECT count(*) FROM embedding WHERE {_WHERE}"
    row = raw_connection(conn).execute(query, _bounds(service_id, after_id, upto_id)).fetchone()
    return int(row[0]) if row else 0


def iter_service_vectors(
    conn: Connection, service_id: int, dim: int, *, after_id: int = 0, upto_id: int | None = None
) -> Iterator[VectorSet]:
    """The vectors of a service with after_id < id <= upto_id, ordered by id, in chunks as they arrive."""
    return iter_copy(raw_connection(conn), _SELECT, _bounds(service_id, after_id, upto_id), dim=dim)


def service_vector_ids(conn: Connection, service_id: int, *, upto_id: int) -> np.ndarray:
    """The ids of a service's vectors up to `upto_id`, ascending: 8 bytes each, so a training sample's
    positions can be drawn over them without reading the vectors."""
    query = f"SELECT id FROM embedding WHERE {_WHERE} ORDER BY id"
    sql = f"COPY ({query}) TO STDOUT (FORMAT BINARY)"
    with raw_connection(conn).cursor() as cur, cur.copy(sql, _bounds(service_id, 0, upto_id)) as copy:
        data = b"".join(bytes(part) for part in copy)
    start = 19 + int.from_bytes(data[15:19], "big")
    records = np.frombuffer(data[start:-2], dtype=np.dtype([("nfields", ">i2"), ("id_len", ">i4"), ("id", ">i8")]))
    return records["id"].astype(np.int64)


def read_vectors_by_id(conn: Connection, service_id: int, dim: int, ids: np.ndarray) -> VectorSet:
    """The service's vectors with these ids (e.g. a training sample), ordered by id."""
    query = "SELECT id, vector FROM embedding WHERE service_id = %s AND id = ANY(%s) ORDER BY id"
    return copy_vectors(raw_connection(conn), query, (service_id, ids.tolist()), dim=dim, count=len(ids))


def read_service_vectors(
    conn: Connection, service_id: int, dim: int, *, after_id: int = 0, upto_id: int | None = None
) -> VectorSet:
    """All vectors of a service with after_id < id <= upto_id, ordered by id."""
    count = count_service_vectors(conn, service_id, after_id=after_id, upto_id=upto_id)
    if count == 0:
        return VectorSet(ids=np.empty(0, np.int64), vectors=np.empty((0, dim), np.float32))
    return copy_vectors(raw_connection(conn), _SELECT, _bounds(service_id, after_id, upto_id), dim=dim, count=count)


def max_embedding_id(conn: Connection, service_id: int) -> int:
    row = (
        raw_connection(conn)
        .execute("SELECT coalesce(max(id), 0) FROM embedding WHERE service_id = %s", (service_id,))
        .fetchone()
    )
    return int(row[0]) if row else 0
