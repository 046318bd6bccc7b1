"""The simsearch command line: flags translated into the same core calls the HTTP API makes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError

from simsearch import __version__, samples, store
from simsearch.errors import BadInput, DatabaseUnavailable, SimsearchError
from simsearch.index import build_generation
from simsearch.input import Crop, Source, iter_sources
from simsearch.settings import Settings, get_settings, settings_table
from simsearch.store import Hit, RankedImage, ServiceRecord

if TYPE_CHECKING:
    from simsearch.core import Core
    from simsearch.objects import Plan
    from simsearch.queries import FoundObjects, ObjectQuery
    from simsearch.samples import EditedCopy

# torch-backed modules (core, services, ingest, objects, queries) are imported inside the functions that need
# them: `simsearch --help` answers in a fraction of a second instead of after loading torch.

app = typer.Typer(
    help="PostgreSQL-backed image similarity search. Run `simsearch demo` to see it work.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
service_app = typer.Typer(help="Services: a named model + index configuration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(service_app, name="service")
console = Console(stderr=True)
out = Console()


def connect_database(settings: Settings) -> Engine:
    """The configured Postgres (DATABASE_URL) or the embedded one, as it is: neither migrated nor checked."""
    from simsearch.core import open_engine  # simsearch.core imports the models package (torch)

    if settings.database_url:
        url = settings.database_url
    else:
        with console.status(f"starting the embedded PostgreSQL in {settings.pgdata}"):
            url = store.embedded_postgres(settings.pgdata)
    return open_engine(settings, url, log_outages=False)  # main() prints the error


def open_database(settings: Settings, *, migrate: bool | None = None) -> Engine:
    """The database, migrated to the latest schema; or, with `migrate` False (None: as SIMSEARCH_MIGRATE
    says), checked to be at it: a role without DDL rights refuses to start on an older schema."""
    from simsearch.core import at_head

    return at_head(connect_database(settings), migrate=settings.migrate if migrate is None else migrate)


@contextmanager
def database(settings: Settings, *, migrate: bool | None = None) -> Iterator[Engine]:
    """The migrated (or checked) database of one command, closed after it."""
    engine = open_database(settings, migrate=migrate)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def as_it_is(settings: Settings) -> Iterator[Engine]:
    """The database of a `db` command that reads or changes the schema's revision itself."""
    engine = connect_database(settings)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def opened_core(settings: Settings) -> Iterator[Core]:
    """The command's one Core, as the API's lifespan builds it but without the per-call item limit (the
    CLI commits per batch, so a folder of any size streams) and without URLs (it reads local files, as before).
    Its index cache never listens: nothing to stop."""
    from simsearch.core import make_core

    with database(settings) as engine:
        yield make_core(settings, engine, bounded=False, urls=False)


def find_service(engine: Engine, name: str) -> ServiceRecord:
    with engine.connect() as conn:
        return store.get_service(conn, name.lower())


@contextmanager
def flag_names() -> Iterator[None]:
    """The core's refusals name its fields (`detector`); the command line's name its flags (`--detector`)."""
    try:
        yield
    except BadInput as exc:
        raise BadInput(f"--{exc.field}", exc.reason) from None


@contextmanager
def progress_bar() -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        yield progress


def hit_json(hit: Hit) -> dict[str, object]:
    return {
        "uri": hit.uri,
        "dist": round(hit.dist, 6),
        "metadata": {
            "image_id": hit.image_id,
            "width": hit.width,
            "height": hit.height,
            "sha256": hit.sha256,
            "user": hit.metadata,
        },
    }


def results_table(query: str, hits: Sequence[Hit]) -> Table:
    table = Table(title=f"nearest to {query}", title_justify="left")
    for column in ("#", "dist", "uri", "size", "sha256"):
        table.add_column(column, justify="right" if column in ("#", "dist") else "left", overflow="fold")
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.dist:.4f}", hit.uri, f"{hit.width}x{hit.height}", hit.sha256[:12])
    return table


def absolute(items: Sequence[str]) -> list[str]:
    """Paths become absolute, so stored uris do not depend on where the command ran; base64 stays."""
    # os.path.lexists, as input.sources uses: Path.exists raises on a long base64 string (ENAMETOOLONG)
    return [str(Path(item).absolute()) if os.path.lexists(item) else item for item in items]


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations (every command that needs the database also does this, unless
    SIMSEARCH_MIGRATE=false). Run it with a role that may change the schema, once per release.

    Example: DATABASE_URL=postgresql://owner:pw@db/simsearch simsearch db upgrade
    """
    with database(get_settings(), migrate=True) as engine:
        console.print(f"database at revision {store.db.current_revision(engine)}")


@db_app.command("current")
def db_current(
    check: Annotated[bool, typer.Option(help="Exit with status 1 when the schema is not at head.")] = False,
) -> None:
    """Print the database's schema revision and whether it is this version's head (nothing is migrated).

    Example: simsearch db current            (prints e.g. `0004 (head)`)
    Example: simsearch db current --check && simsearch serve --no-migrate
    """
    with as_it_is(get_settings()) as engine:
        state = store.db.schema_state(engine)
    out.print(state.describe(), markup=False, highlight=False, soft_wrap=True)
    if check and not state.at_head:
        raise typer.Exit(1)


@db_app.command("history")
def db_history() -> None:
    """List the migrations, newest first, marking this version's head and the database's current revision.

    Example: simsearch db history
    """
    with as_it_is(get_settings()) as engine:
        state = store.db.schema_state(engine)
    # no box: one line per revision, for grep and awk
    table = Table(title=f"migrations (database at {state.current or 'none'})", title_justify="left", box=None)
    for column in ("revision", "revises", "", "description"):
        table.add_column(column, overflow="fold")
    for revision in store.db.revisions():
        marks = [
            m
            for m, on in (("head", revision.revision == state.head), ("current", revision.revision == state.current))
            if on
        ]
        table.add_row(revision.revision, revision.down_revision or "-", ", ".join(marks), revision.description)
    out.print(table)


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="The revision to go down to (see `db history`), or base.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Migrate the schema down to REVISION: the later migrations are undone, and the columns and tables
    they added are dropped with their data. Stop every `simsearch serve` first; run the older simsearch
    after. Asks for confirmation unless --yes.

    Example: simsearch db downgrade 0003
    Example: simsearch db downgrade 0003 --yes   (in a script: no question)
    """
    with as_it_is(get_settings()) as engine:
        state = store.db.schema_state(engine)
        store.db.check_downgrade(state, revision)
        if revision == state.current:
            console.print(f"database already at revision {revision}")
            return
        where = store.masked_url(engine.url.render_as_string(hide_password=False))
        if not yes:
            typer.confirm(
                f"downgrade {where} from revision {state.current} to {revision}? The columns and tables "
                "the later migrations added are dropped, with their data",
                abort=True,
            )
        store.db.downgrade(engine, revision)
        console.print(f"database at revision {store.db.current_revision(engine)} (head is {state.head})")


ModelOption = Annotated[
    str,
    typer.Option(
        help="An extractor (a torchvision classification model such as resnet50, or dlib:face_descriptor) or a "
        "detector (dlib:frontal_face, opencv:haarcascade_frontalface_default, ssd_mobilenet_v2_coco, or a "
        "torchvision detection model such as fasterrcnn_mobilenet_v3_large_320_fpn)."
    ),
]
WeightsOption = Annotated[
    str, typer.Option(help="DEFAULT, a torchvision weights name, none (random, for tests), or a state_dict file.")
]
LayerOption = Annotated[
    str | None,
    typer.Option(help="Node name to extract (default: pooled layer before the classifier; `last` = the logits)."),
]
SizeOption = Annotated[
    int | None, typer.Option(help="Input width and height in pixels [default: 224; detectors: the model's own size].")
]
MetricOption = Annotated[str, typer.Option(help="l2 (reports Σ(q−x)²/D) or cosine (reports sqrt(2−2cos)).")]
IndexTypeOption = Annotated[str, typer.Option(help="FAISS index_factory string used by `build`.")]
BackendOption = Annotated[str, typer.Option(help="faiss or annoy.")]
NprobeOption = Annotated[int | None, typer.Option(help="IVF lists searched (default: lists / 20).")]
EfSearchOption = Annotated[int | None, typer.Option(help="HNSW search depth.")]
TrainOption = Annotated[int | None, typer.Option(help="Train IVF/PQ on this many random vectors.")]
OndiskOption = Annotated[bool, typer.Option(help="IVF lists in a file beside the index, memory-mapped.")]
TreesOption = Annotated[int | None, typer.Option(help="Annoy: trees in the forest (default 50).")]


@service_app.command("create")
def service_create(
    name: Annotated[str, typer.Argument(help="Service name (lowercased).")],
    model: ModelOption,
    weights: WeightsOption = "DEFAULT",
    layer: LayerOption = None,
    size: SizeOption = None,
    metric: MetricOption = "l2",
    index_type: IndexTypeOption = "Flat",
    index_backend: BackendOption = "faiss",
    nprobe: NprobeOption = None,
    ef_search: EfSearchOption = None,
    train_samples: TrainOption = None,
    ondisk: OndiskOption = False,
    n_trees: TreesOption = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
) -> None:
    """Register a service: an extractor (makes a vector per image, or per object found by a detector) or
    a detector (finds objects; the Faster R-CNN family also makes a vector per object).

    Example: simsearch service create photos --model resnet50 --weights DEFAULT --metric cosine
    Example: simsearch service create big --model resnet50 --index-type IVF4096,SQ8 --train-samples 200000
    Example: simsearch service create faces --model dlib:frontal_face
    Example: simsearch service create face-vectors --model dlib:face_descriptor
    """
    from simsearch import services
    from simsearch.index import index_settings

    given = {
        "index_backend": index_backend,
        "index_type": index_type,
        "nprobe": nprobe,
        "ef_search": ef_search,
        "train_samples": train_samples,
        "ondisk": ondisk,
        "n_trees": n_trees,
    }
    settings = index_settings({key: value for key, value in given.items() if value is not None})
    with opened_core(get_settings()) as core, console.status(f"loading {model} ({weights})"):
        record = services.create_service(
            core.engine,
            core.models,
            name,
            model=model,
            weights=weights,
            layer=layer,
            size=size,
            metric=metric,
            index=settings,
            description=description,
        )
    print_created(record)


def print_created(record: ServiceRecord) -> None:
    console.print(
        f"created service [bold]{record.name}[/]: {record.model} ({record.kind}) weights={record.weights} "
        f"layer={record.layer} dim={record.dim} metric={record.metric}"
    )
    if record.kind == "detector" and record.dim == 0:
        console.print(
            f"{record.name} finds objects and makes no vectors: embed them with an extractor service, "
            f"`simsearch index PATHS --service <extractor> --detector {record.name}`"
        )
    if record.weights == "none":
        console.print("[yellow]weights none: random initialisation, for tests only; results mean nothing[/]")


@service_app.command("list")
def service_list() -> None:
    """List the services with their vector counts and current index generation."""
    table = Table()
    for column in ("name", "kind", "model", "weights", "layer", "dim", "metric", "vectors", "generation"):
        table.add_column(column)
    with database(get_settings()) as engine, engine.connect() as conn:
        for svc in store.list_services(conn):
            build = store.current_build(conn, svc.id)
            table.add_row(
                svc.name,
                svc.kind,
                svc.model,
                svc.weights,
                svc.layer,
                str(svc.dim),
                svc.metric,
                str(store.count_vectors(conn, svc.id)),
                str(build.id) if build else "-",
            )
    out.print(table)


@service_app.command("delete")
def service_delete(name: Annotated[str, typer.Argument(help="Service name.")]) -> None:
    """Delete a service: its vectors, objects, index records and index files, and the images no other
    service uses (the API's DELETE with clear=full does the same)."""
    from simsearch import services

    settings = get_settings()
    with database(settings) as engine:
        record = services.remove_service(engine, name, clear="full", index_dir=settings.index_dir)
    console.print(f"deleted service {record.name}")


# How `search --objects` ranks images (sql/functions/rank_images.sql): the choices are store.SCORES, the one
# score list. mypy cannot see the members of an enum made from a tuple; none is named in the code.
Score = StrEnum("Score", {score.upper(): score for score in store.SCORES})  # type: ignore[misc]
MEAN = Score("mean")

DetectorOption = Annotated[
    str | None,
    typer.Option(
        "--detector",
        "-d",
        help="Detector service that finds the objects; the --service embeds each crop. Left out with a detector "
        "--service: its own box vectors.",
    ),
]
PaddingOption = Annotated[
    float, typer.Option(min=0.0, help="Grow each box by this share of its width (height) on every side.")
]
SquareOption = Annotated[bool, typer.Option(help="Crop squares (the shorter side grown to the longer one).")]
ThresholdOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Keep only the detected objects of at least this probability.")
]


@app.command("index")
def index_cmd(
    paths: Annotated[list[str], typer.Argument(help="Image files and directories (walked recursively).")],
    service: Annotated[str, typer.Option("--service", "-s", help="Service name.")],
    detector: DetectorOption = None,
    padding_ratio: PaddingOption = 0.0,
    force_square: SquareOption = False,
    confidence_threshold: ThresholdOption = 0.0,
    category: Annotated[
        list[str] | None, typer.Option("--category", help="Keep only the objects of this category (repeatable).")
    ] = None,
) -> None:
    """Index images: decode, extract vectors, store them in Postgres (one transaction per batch).

    With --detector (or a detector --service), the objects found in each image are indexed instead: their
    boxes, and a vector per object. An image without objects stores nothing.
    Re-indexing a path replaces its vectors. New images are searchable at once, before `build`.

    Example: simsearch index ~/photos --service photos
    Example: simsearch index ~/photos --service face-vectors --detector faces --padding-ratio 0.1
    """
    crop = Crop(padding_ratio=padding_ratio, force_square=force_square)
    with opened_core(get_settings()) as core:
        record = find_service(core.engine, service)
        plan = index_plan(core, record, detector, crop, confidence_threshold, category)
        items = absolute(paths)
        total = sum(1 for _ in iter_sources(items, roots=core.intake.roots, urls=core.intake.urls))
        if plan is not None:
            index_objects(core, items, total, plan)
        else:
            index_images(core, record, items, total)


def index_plan(
    core: Core,
    record: ServiceRecord,
    detector: str | None,
    crop: Crop,
    confidence_threshold: float,
    categories: list[str] | None,
) -> Plan | None:
    """`objects.plan` (the API's rule) with the CLI's flags, loading the models under a spinner; without an
    object pipeline, the object flags are refused rather than ignored."""
    from simsearch import objects

    with console.status("loading the models"), flag_names():
        plan = objects.plan(
            core.engine,
            core.models,
            record,
            detector.lower() if detector else None,
            crop=crop,
            confidence_threshold=confidence_threshold,
            categories=categories or None,
        )
    if plan is None:
        for flag, given in (
            ("--padding-ratio", crop.padding_ratio),
            ("--force-square", crop.force_square),
            ("--confidence-threshold", confidence_threshold),
            ("--category", categories),
        ):
            if given:
                raise BadInput(flag, f"applies to objects only: give --detector (a detector service) with {flag}")
    return plan


def index_images(core: Core, record: ServiceRecord, items: list[str], total: int) -> None:
    from simsearch import services
    from simsearch.ingest import ingest

    with console.status(f"loading {record.model}"):
        extractor = services.extractor_for(record, core.models)
    with progress_bar() as progress:
        task = progress.add_task(f"indexing into {record.name}", total=total)
        report = ingest(
            core.engine, record, extractor, items, core.intake, on_batch=lambda n: progress.advance(task, n)
        )
    console.print(f"indexed {report.indexed} images into {record.name}; skipped {report.skipped} non-image files")


def index_objects(core: Core, items: list[str], total: int, plan: Plan) -> None:
    from simsearch import objects

    detector, service, how = plan.detector, plan.service, plan.how
    into = service.name if service is not None else f"{detector.name} (boxes only)"
    with progress_bar() as progress:
        task = progress.add_task(f"finding objects with {detector.name}, indexing into {into}", total=total)
        report = objects.index_objects(
            core.engine,
            detector,
            service,
            items,
            how,
            core.intake,
            keep_images=False,
            on_batch=lambda n: progress.advance(task, n),
        )
    console.print(
        f"stored {report.objects_stored} objects of {report.with_objects} images into {into}; "
        f"{report.without_objects} images without objects; skipped {len(report.skipped)} non-image files"
    )


@app.command("build")
def build_cmd(
    service: Annotated[str, typer.Option("--service", "-s", help="Service name.")],
    index_type: Annotated[str | None, typer.Option(help="FAISS index_factory string (default: the service's).")] = None,
) -> None:
    """Rebuild the service's FAISS index from Postgres as a new generation and make it current."""
    from simsearch.core import artefact_store

    settings = get_settings()
    with database(settings) as engine:
        record = find_service(engine, service)
        with console.status(f"building the index of {record.name}"):
            store_ = artefact_store(settings)  # published where every replica fetches (SIMSEARCH_ARTEFACTS)
            build = build_generation(engine, record, settings.index_dir, index_type=index_type, artefacts=store_)
    seconds = sum(float(v) for v in build.timings.values())
    console.print(
        f"generation {build.id}: {build.index_type} over {build.vector_count} vectors in {seconds:.2f}s ({build.path})"
    )


KOption = Annotated[
    int, typer.Option("-k", help="Number of neighbours (with --objects: per query object).", min=1, max=10000)
]
ObjectsOption = Annotated[
    bool,
    typer.Option("--objects", help="Find the objects of each query image and rank the stored images by their objects."),
]
ScoreOption = Annotated[
    Score,
    typer.Option(
        help="--objects ranking: mean or min distance (ascending), count of query objects matched or "
        "sum_similarity = sum of 1/(1+dist) (descending); ties by mean distance."
    ),
]
LimitOption = Annotated[int, typer.Option(min=1, max=10000, help="--objects: how many images to rank.")]
PerObjectOption = Annotated[
    bool, typer.Option("--per-object", help="--objects: also print each query object's nearest objects.")
]
StoredCategoryOption = Annotated[
    list[str] | None, typer.Option("--category", help="--objects: only stored objects of this category (repeatable).")
]


@app.command("search")
def search_cmd(
    images: Annotated[list[str], typer.Argument(help="Query image files or directories.")],
    service: Annotated[str, typer.Option("--service", "-s", help="Service name.")],
    k: KOption = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    objects_: ObjectsOption = False,
    detector: DetectorOption = None,
    score: ScoreOption = MEAN,
    limit: LimitOption = 10,
    per_object: PerObjectOption = False,
    padding_ratio: PaddingOption = 0.0,
    force_square: SquareOption = False,
    confidence_threshold: ThresholdOption = 0.0,
    category: StoredCategoryOption = None,
) -> None:
    """Find the stored images nearest to each query image, with their metadata.

    With --objects: detect the objects of each query image (--detector, or the --service's own boxes), find
    each one's k nearest stored objects, and rank the stored images by those hits (--score).

    Example: simsearch search query.jpg --service photos -k 5 --json
    Example: simsearch search group.jpg --service face-vectors --objects --detector faces --score count
    """
    from simsearch.queries import ObjectQuery

    with opened_core(get_settings()) as core:
        record = find_service(core.engine, service)
        if not objects_:
            for flag, given in (("--detector", detector), ("--per-object", per_object), ("--category", category)):
                if given:
                    raise BadInput(flag, "applies to object search only: add --objects")
            print_image_results(search_images(core, record, images, k), as_json)
            return
        query = ObjectQuery(
            detector=detector.lower() if detector else None,
            crop=Crop(padding_ratio=padding_ratio, force_square=force_square),
            confidence_threshold=confidence_threshold,
            k=k,
            categories=tuple(category) if category else None,
            score=cast("store.Score", score.value),
            limit=limit,
        )
        results = search_objects(core, record, images, query)
    print_object_results(results, query, as_json, per_object)


def query_sources(core: Core, images: Sequence[str]) -> list[Source]:
    """Every query image: each file, base64 string or URL given, and each file inside a directory given
    (all of them checked before the first is searched)."""
    return list(iter_sources(absolute(images), roots=core.intake.roots, urls=core.intake.urls))


def query_image(source: Source) -> str | bytes:
    """What the core reads for one query: the source's bytes (base64, a fetched URL), else its path."""
    if source.skip_reason is not None:  # a directory entry that is no readable file: reading it would say so
        raise BadInput(f"data[{source.position}]", f"{source.uri}: {source.skip_reason}")
    return source.content if source.content is not None else source.uri


def as_argument(exc: BadInput, source: Source) -> BadInput:
    """The core names the query `image`; the command line, as ever, the argument it came from (`data[i]`)."""
    if not exc.field.startswith("image"):
        return exc
    return BadInput(f"data[{source.position}]{exc.field.removeprefix('image')}", exc.reason)


def search_images(core: Core, record: ServiceRecord, images: Sequence[str], k: int) -> list[tuple[str, list[Hit]]]:
    """Each query image's k nearest stored images (the API's search by image), with the query's uri."""
    from simsearch import queries, services

    services.extractor_for(record, core.models)  # a detector service is refused before any image is read
    found = []
    for source in query_sources(core, images):
        try:
            vector = queries.image_vector(core, record, query_image(source))
        except BadInput as exc:
            raise as_argument(exc, source) from exc
        found.append((source.uri, queries.search_image(core, record, vector, k).hits))
    return found


def print_image_results(found: Sequence[tuple[str, list[Hit]]], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps([{"uri": uri, "nns": [hit_json(h) for h in hits]} for uri, hits in found]))
        return
    for uri, hits in found:
        out.print(results_table(uri, hits))


@dataclass(frozen=True, slots=True)
class ObjectResult:
    uri: str  # the query as given (a path, a URL) or sha256:<hex> for base64 bytes
    found: FoundObjects
    images: list[RankedImage]


def search_objects(core: Core, record: ServiceRecord, images: Sequence[str], query: ObjectQuery) -> list[ObjectResult]:
    """Each query image's objects, each one's nearest stored objects, and the stored images ranked by those
    hits (the API's object search and similar images). A file inside a directory that is not an image is
    skipped, as `index` skips it."""
    from simsearch import queries

    with console.status("loading the models"), flag_names():
        plan = queries.object_plan(core, record, query, search=True)
    if plan is None or plan.service is None:  # object_plan refuses these when searching
        raise BadInput("--detector", f"{record.name} makes no object vectors to search")
    results = []
    with console.status("finding the objects of the query images"):
        for source in query_sources(core, images):
            try:
                found = queries.query_objects(core, record, query_image(source), query)
            except BadInput as exc:
                if not source.explicit and exc.field.startswith(("image", "data[")):
                    continue
                raise as_argument(exc, source) from exc
            results.append(ObjectResult(source.uri, found, queries.rank_found(core, found, query).images))
    return results


def box_text(bbox: Sequence[float] | None) -> str:
    return ",".join(f"{v:.0f}" for v in bbox) if bbox is not None else "-"


def print_object_results(results: Sequence[ObjectResult], query: ObjectQuery, as_json: bool, per_object: bool) -> None:
    if as_json:
        out.print_json(json.dumps([object_json(result, per_object) for result in results]))
        return
    for result in results:
        found = result.found
        out.print(query_objects_table(result.uri, found))
        if per_object:
            for number, (obj, neighbours) in enumerate(zip(found.query.objects, found.hits, strict=True)):
                title = f"nearest to object {number} ({obj.category} {box_text(obj.bbox)})"
                out.print(neighbours_table(title, neighbours))
        out.print(ranking_table(f"images ranked by {query.score} for {result.uri}", result.images))


def query_objects_table(uri: str, found: FoundObjects) -> Table:
    table = Table(title=f"objects of {uri}", title_justify="left")
    for column in ("#", "category", "prob", "box (xmin,ymin,xmax,ymax)"):
        table.add_column(column)
    for number, obj in enumerate(found.query.objects):
        table.add_row(str(number), obj.category, f"{obj.prob:.3f}", box_text(obj.bbox))
    return table


def neighbours_table(title: str, hits: Sequence[Hit]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("#", "dist", "uri", "category", "box"):
        table.add_column(column, justify="right" if column in ("#", "dist") else "left", overflow="fold")
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.dist:.4f}", hit.uri, hit.category or "-", box_text(hit.bbox))
    return table


def ranking_table(title: str, images: Sequence[RankedImage]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("#", "score", "query objects", "uri", "boxes"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left", overflow="fold")
    for rank, image in enumerate(images, 1):
        matched = sorted({int(m["query"]) for m in image.matches})
        boxes = sorted({box_text(m["bbox"]) for m in image.matches})
        table.add_row(str(rank), f"{image.score:.4f}", ",".join(map(str, matched)), image.uri, " ".join(boxes))
    return table


def object_json(result: ObjectResult, per_object: bool) -> Any:  # noqa: ANN401
    found = result.found
    objects: list[dict[str, Any]] = [
        {"bbox": list(o.bbox), "category": o.category, "prob": round(o.prob, 6)} for o in found.query.objects
    ]
    if per_object:
        for obj, hits in zip(objects, found.hits, strict=True):
            obj["nns"] = [hit_json(h) | {"bbox": h.bbox, "category": h.category, "prob": h.prob} for h in hits]
    return {"uri": result.uri, "query_objects": objects, "images": [ranked_json(r) for r in result.images]}


def ranked_json(image: RankedImage) -> dict[str, Any]:
    return {
        "uri": image.uri,
        "image_id": image.image_id,
        "score": image.score,
        "hit_count": image.hit_count,
        "query_count": image.query_count,
        "mean_dist": image.mean_dist,
        "min_dist": image.min_dist,
        "metadata": image.metadata,
        "matches": image.matches,
    }


@app.command("demo")
def demo_cmd(
    model: Annotated[str, typer.Option(help="Model for the demo service.")] = "mobilenet_v2",
    weights: Annotated[
        str, typer.Option(help="Weights (DEFAULT uses a registry-installed file when present).")
    ] = "DEFAULT",
    show: Annotated[int, typer.Option(help="How many query photos to print tables for.")] = 4,
    k: Annotated[int, typer.Option("-k", help="Neighbours per query.")] = 3,
) -> None:
    """Index scikit-image's sample photos, build, then search with edited copies (crops, flips, brightness).

    Each edited copy should find its original first. Runs offline in a minute or two on 2 cores;
    the photos are written to $SIMSEARCH_HOME/demo and the service is called `demo`.
    """
    settings = get_settings()
    folder = settings.home / "demo"
    with opened_core(settings) as opened:
        with console.status("writing sample photos"):
            originals, copies = samples.write_samples(folder)
        # the demo's photos are read from its own folder, whatever the data roots
        core = replace(opened, intake=replace(opened.intake, roots=(*opened.intake.roots, folder)))
        record = demo_service(core, model, weights)
        demo_index(core, record, originals)
        results = demo_search(core, record, copies, k)
    for copy, hits in list(zip(copies, results, strict=True))[:show]:
        out.print(results_table(f"{copy.path.name} ({copy.edit} of {copy.original.name})", hits))
    found = sum(1 for c, hits in zip(copies, results, strict=True) if hits and hits[0].uri == str(c.original))
    out.print(
        f"[bold]{found}/{len(copies)}[/] edited copies found their original first "
        f"(model {record.model}, weights {record.weights})."
    )
    if record.weights == "none":
        out.print("[yellow]weights none: a random network, so these results mean nothing[/]")


def demo_service(core: Core, model: str, weights: str) -> ServiceRecord:
    """A fresh `demo` service: the previous demo's, with its index files, is deleted first."""
    from simsearch import services

    with core.engine.connect() as conn:
        again = any(s.name == "demo" for s in store.list_services(conn))
    if again:
        services.remove_service(core.engine, "demo", clear="full", index_dir=core.index_dir)
    with console.status(f"loading {model} ({weights})"):
        record = services.create_service(
            core.engine, core.models, "demo", model=model, weights=weights, description="simsearch demo"
        )
    console.print(f"service demo: {record.model} weights={record.weights} layer={record.layer} dim={record.dim}")
    return record


def demo_index(core: Core, record: ServiceRecord, originals: Path) -> None:
    from simsearch import services
    from simsearch.ingest import ingest

    extractor = services.extractor_for(record, core.models)
    with progress_bar() as progress:
        task = progress.add_task("indexing the original photos", total=len(samples.PHOTOS))
        ingest(
            core.engine, record, extractor, [str(originals)], core.intake, on_batch=lambda n: progress.advance(task, n)
        )
    with console.status("building the FAISS index"):
        build = build_generation(core.engine, record, core.index_dir, artefacts=core.artefacts)
    console.print(f"built generation {build.id} ({build.index_type}, {build.vector_count} vectors)")


def demo_search(core: Core, record: ServiceRecord, copies: Sequence[EditedCopy], k: int) -> list[list[Hit]]:
    """Each edited copy's k nearest originals, as `search` finds them."""
    from simsearch import queries

    results = []
    with progress_bar() as progress:
        task = progress.add_task("searching with the edited copies", total=len(copies))
        for copy in copies:
            vector = queries.image_vector(core, record, str(copy.path))
            results.append(queries.search_image(core, record, vector, k).hits)
            progress.advance(task, 1)
    return results


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each loads its own models and indexes).")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    migrate: Annotated[
        bool | None,
        typer.Option(
            help="Apply pending migrations first (default: SIMSEARCH_MIGRATE, true). --no-migrate, for a role "
            "without DDL rights: refuse to start unless the schema is at head (`simsearch db upgrade` by the "
            "owner, once per release).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the HTTP API: DeepDetect's routes (/info, /services, /predict) and the native /api/v1, with
    its OpenAPI schema and docs at /schema.

    Example: SIMSEARCH_API_TOKEN=secret simsearch serve --host 0.0.0.0 --port 8080 --workers 2
    Example: simsearch db upgrade (as the schema's owner, once per release), then simsearch serve --no-migrate
    """
    from granian import Granian
    from granian.constants import Interfaces

    from simsearch.api.observe import granian_log_config

    settings = get_settings()
    if host not in _LOOPBACK and not (settings.api_token or settings.read_token):
        console.print(
            f"[yellow]warning:[/] serving on {host} without authentication: anyone who can reach this port can "
            "index and delete. Set SIMSEARCH_API_TOKEN (and SIMSEARCH_READ_TOKEN for search-only clients)."
        )
    migrate = settings.migrate if migrate is None else migrate
    # starts the embedded server if needed, and migrates (or checks the schema) once for all workers
    with database(settings, migrate=migrate) as engine:
        os.environ["DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
    os.environ["SIMSEARCH_MIGRATE"] = str(migrate).lower()  # the workers' open_database does as this one did
    console.print(f"simsearch {__version__} on http://{host}:{port} (docs at /schema), {workers} worker(s)")
    Granian(
        "simsearch.api.app:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=host,
        port=port,
        workers=workers,
        log_access=access_log,
        log_dictconfig=granian_log_config(settings),  # granian's own lines in the app's format
    ).serve()


@app.command("config")
def config_cmd() -> None:
    """Print the settings simsearch reads from the environment, with their current values."""
    settings = get_settings()
    out.print(settings_table(), markup=False, highlight=False)
    out.print()
    for name in type(settings).model_fields:
        out.print(f"{name} = {shown_value(getattr(settings, name))}", markup=False, highlight=False, soft_wrap=True)


def shown_value(value: object) -> str:
    """A setting's value as `config` prints it: passwords and tokens masked."""
    if isinstance(value, SecretStr):
        return repr("***")
    if isinstance(value, str) and "://" in value:  # DATABASE_URL
        try:
            return repr(store.masked_url(value))
        except ArgumentError:
            return repr("***")
    return repr(value)


@app.command("version")
def version_cmd() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    try:
        app()
    except Exception as exc:
        error = exc if isinstance(exc, SimsearchError) else store.database_unavailable(exc)
        if error is None:
            raise  # a bug: its traceback is what a report needs
        message = error.for_operator() if isinstance(error, DatabaseUnavailable) else error.message
        console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # one line
        sys.exit(2 if error.status < 500 else 1)
