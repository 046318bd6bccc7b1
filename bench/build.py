"""Build: our index builds from Postgres (`build_generation`) against a bare binary COPY of the same vectors
(the floor of any build from Postgres) and against pgvector's `CREATE INDEX ... USING hnsw`."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import psycopg

from bench import paired_median_seconds
from bench.data import Database
from bench.rss import ChildBuild, build_in_fresh_process
from simsearch.index import build_generation
from simsearch.store import ServiceRecord
from simsearch.store.read import copy_vectors

COPY_QUERY = "SELECT id, vector FROM embedding WHERE service_id = %s ORDER BY id"


@dataclass(frozen=True, slots=True)
class FlatVsCopy:
    seconds: float  # median build_generation(Flat)
    copy_seconds: float  # median bare binary COPY into one numpy buffer
    phases: dict[str, float]  # median seconds per phase of the build (read_s, train_add_s, write_s)
    runs: int


def flat_vs_copy(db: Database, service: ServiceRecord, count: int, *, runs: int) -> FlatVsCopy:
    """Our cheapest build (a new Flat generation: read, add, write, record) against one bare binary COPY of
    the same vectors into one numpy buffer, timed in alternation."""
    timings: list[dict[str, float]] = []

    def build() -> None:
        record = build_generation(db.engine, service, db.folder / "indexes", index_type="Flat")
        assert record.vector_count == count
        timings.append(record.timings)

    with psycopg.connect(db.url, autocommit=True) as raw:

        def bare_copy() -> None:
            vectors = copy_vectors(raw, COPY_QUERY, (service.id,), dim=service.dim, count=count)
            assert len(vectors) == count

        ours, reference = paired_median_seconds(build, bare_copy, runs=runs)
    phases = {name: statistics.median(t[name] for t in timings[-runs:]) for name in timings[-1]}  # timed runs
    return FlatVsCopy(seconds=ours, copy_seconds=reference, phases=phases, runs=runs)


@dataclass(frozen=True, slots=True)
class BuildRow:
    index_type: str
    seconds: float  # our build from Postgres (Flat: the median of FlatVsCopy; others: the fresh-process build)
    runs: int  # timed builds behind `seconds`
    child: ChildBuild  # the build in a fresh process (its peak RSS)


def fresh_build(db: Database, service: ServiceRecord, index_type: str, count: int) -> ChildBuild:
    """One build of `index_type` in a fresh process (timed, and its peak RSS), made the current generation."""
    child = build_in_fresh_process(db, service, db.folder / "indexes", index_type)
    assert child.vector_count == count, child
    return child
