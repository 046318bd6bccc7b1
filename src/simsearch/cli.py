"""The simsearch command line: the same functions the HTTP API calls."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine

from simsearch import __version__, samples, store
from simsearch.errors import SimsearchError
from simsearch.index import build_generation, load_current
from simsearch.input import decode_image, iter_sources
from simsearch.settings import Settings, get_settings, settings_table
from simsearch.store import Hit

# torch-backed modules (services, ingest, search) are imported inside the commands that need them:
# `simsearch --help` answers in a fraction of a second instead of after loading torch.

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


def open_database(settings: Settings, *, migrate: bool = True) -> Engine:
    """The configured Postgres (DATABASE_URL) or the embedded one, migrated to the latest schema."""
    if settings.database_url:
        url = settings.database_url
    else:
        with console.status(f"starting the embedded PostgreSQL in {settings.pgdata}"):
            url = store.embedded_postgres(settings.pgdata)
    engine = store.make_engine(url)
    if migrate:
        store.upgrade(engine)
    return engine


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
    """Apply the Alembic migrations (every command that needs the database also does this)."""
    engine = open_database(get_settings())
    console.print(f"database at revision {store.db.current_revision(engine)}")


@service_app.command("create")
def service_create(
    name: Annotated[str, typer.Argument(help="Service name (lowercased).")],
    model: Annotated[str, typer.Option(help="torchvision classification model, e.g. resnet50, mobilenet_v2.")],
    weights: Annotated[
        str, typer.Option(help="DEFAULT, a torchvision weights name, none (random, for tests), or a state_dict file.")
    ] = "DEFAULT",
    layer: Annotated[
        str | None,
        typer.Option(help="Node name to extract (default: pooled layer before the classifier; `last` = the logits)."),
    ] = None,
    size: Annotated[int, typer.Option(help="Input width and height in pixels.")] = 224,
    metric: Annotated[str, typer.Option(help="l2 (reports Σ(q−x)²/D) or cosine (reports sqrt(2−2cos)).")] = "l2",
    index_type: Annotated[str, typer.Option(help="FAISS index_factory string used by `build`.")] = "Flat",
    index_backend: Annotated[str, typer.Option(help="faiss or annoy.")] = "faiss",
    nprobe: Annotated[int | None, typer.Option(help="IVF lists searched (default: lists / 20).")] = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search depth.")] = None,
    train_samples: Annotated[int | None, typer.Option(help="Train IVF/PQ on this many random vectors.")] = None,
    ondisk: Annotated[bool, typer.Option(help="IVF lists in a file beside the index, memory-mapped.")] = False,
    n_trees: Annotated[int | None, typer.Option(help="Annoy: trees in the forest (default 50).")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
) -> None:
    """Register an extractor service.

    Example: simsearch service create photos --model resnet50 --weights DEFAULT --metric cosine
    Example: simsearch service create big --model resnet50 --index-type IVF4096,SQ8 --train-samples 200000
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
    engine = open_database(get_settings())
    with console.status(f"loading {model} ({weights})"):
        record = services.create_service(
            engine,
            name,
            model=model,
            weights=weights,
            layer=layer,
            size=size,
            metric=metric,
            index=settings,
            description=description,
        )
    console.print(
        f"created service [bold]{record.name}[/]: {record.model} weights={record.weights} "
        f"layer={record.layer} dim={record.dim} metric={record.metric}"
    )
    if record.weights == "none":
        console.print("[yellow]weights none: random initialisation, for tests only; results mean nothing[/]")


@service_app.command("list")
def service_list() -> None:
    """List the services with their vector counts and current index generation."""
    engine = open_database(get_settings())
    table = Table()
    for column in ("name", "model", "weights", "layer", "dim", "metric", "vectors", "generation"):
        table.add_column(column)
    with engine.connect() as conn:
        for svc in store.list_services(conn):
            build = store.current_build(conn, svc.id)
            table.add_row(
                svc.name,
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
    """Delete a service with its vectors and index records (images stay)."""
    engine = open_database(get_settings())
    with engine.begin() as conn:
        store.delete_service(conn, name.lower())
    console.print(f"deleted service {name.lower()}")


@app.command("index")
def index_cmd(
    paths: Annotated[list[str], typer.Argument(help="Image files and directories (walked recursively).")],
    service: Annotated[str, typer.Option("--service", "-s", help="Service name.")],
) -> None:
    """Index images: decode, extract vectors, store them in Postgres (one transaction per batch).

    Re-indexing a path replaces its vector. New images are searchable at once, before `build`.
    Example: simsearch index ~/photos --service photos
    """
    from simsearch import services
    from simsearch.ingest import ingest

    settings = get_settings()
    engine = open_database(settings)
    with engine.connect() as conn:
        record = store.get_service(conn, service.lower())
    items = absolute(paths)
    total = sum(1 for _ in iter_sources(items, roots=settings.data_roots))
    with console.status(f"loading {record.model}"):
        extractor = services.extractor_for(record)
    with progress_bar() as progress:
        task = progress.add_task(f"indexing into {record.name}", total=total)
        report = ingest(
            engine,
            record,
            extractor,
            items,
            roots=settings.data_roots,
            max_pixels=settings.max_pixels,
            batch_size=settings.batch_size,
            on_batch=lambda n: progress.advance(task, n),
        )
    console.print(f"indexed {report.indexed} images into {record.name}; skipped {report.skipped} non-image files")


@app.command("build")
def build_cmd(
    service: Annotated[str, typer.Option("--service", "-s", help="Service name.")],
    index_type: Annotated[str | None, typer.Option(help="FAISS index_factory string (default: the service's).")] = None,
) -> None:
    """Rebuild the service's FAISS index from Postgres as a new generation and make it current."""
    settings = get_settings()
    engine = open_database(settings)
    with engine.connect() as conn:
        record = store.get_service(conn, service.lower())
    with console.status(f"building the index of {record.name}"):
        build = build_generation(engine, record, settings.index_dir, index_type=index_type)
    seconds = sum(float(v) for v in build.timings.values())
    console.print(
        f"generation {build.id}: {build.index_type} over {build.vector_count} vectors in {seconds:.2f}s ({build.path})"
    )


@app.command("search")
def search_cmd(
    images: Annotated[list[str], typer.Argument(help="Query image files or directories.")],
    service: Annotated[str, typer.Option("--service", "-s", help="Service name.")],
    k: Annotated[int, typer.Option("-k", help="Number of neighbours.", min=1, max=10000)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Find the stored images nearest to each query image, with their metadata.

    Example: simsearch search query.jpg --service photos -k 5 --json
    """
    from simsearch import services
    from simsearch.search import search_images

    settings = get_settings()
    engine = open_database(settings)
    with engine.connect() as conn:
        record = store.get_service(conn, service.lower())
    extractor = services.extractor_for(record)
    index = load_current(engine, record)
    sources = list(iter_sources(absolute(images), roots=settings.data_roots))
    pixels = [decode_image(s.read(), max_pixels=settings.max_pixels, field=f"data[{s.position}]").rgb for s in sources]
    results = search_images(engine, record, extractor, index, pixels, k)
    if as_json:
        out.print_json(
            json.dumps(
                [{"uri": s.uri, "nns": [hit_json(h) for h in hits]} for s, hits in zip(sources, results, strict=True)]
            )
        )
        return
    for source, hits in zip(sources, results, strict=True):
        out.print(results_table(source.uri, hits))


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
    from simsearch import services
    from simsearch.ingest import ingest
    from simsearch.search import search_images

    settings = get_settings()
    engine = open_database(settings)
    folder = settings.home / "demo"
    with console.status("writing sample photos"):
        originals, copies = samples.write_samples(folder)
    roots = [*settings.data_roots, folder]
    with engine.begin() as conn:
        if any(s.name == "demo" for s in store.list_services(conn)):
            store.delete_service(conn, "demo")
    with console.status(f"loading {model} ({weights})"):
        record = services.create_service(engine, "demo", model=model, weights=weights, description="simsearch demo")
    console.print(f"service demo: {record.model} weights={record.weights} layer={record.layer} dim={record.dim}")
    extractor = services.extractor_for(record)
    total = len(samples.PHOTOS)
    with progress_bar() as progress:
        task = progress.add_task("indexing the original photos", total=total)
        ingest(
            engine,
            record,
            extractor,
            [str(originals)],
            roots=roots,
            max_pixels=settings.max_pixels,
            batch_size=settings.batch_size,
            on_batch=lambda n: progress.advance(task, n),
        )
    with console.status("building the FAISS index"):
        build = build_generation(engine, record, settings.index_dir)
    console.print(f"built generation {build.id} ({build.index_type}, {build.vector_count} vectors)")
    index = load_current(engine, record)
    with progress_bar() as progress:
        task = progress.add_task("searching with the edited copies", total=len(copies))
        results: list[list[Hit]] = []
        for start in range(0, len(copies), 16):
            chunk = copies[start : start + 16]
            pixels = [decode_image(c.path.read_bytes(), max_pixels=settings.max_pixels).rgb for c in chunk]
            results.extend(search_images(engine, record, extractor, index, pixels, k))
            progress.advance(task, len(chunk))
    for copy, hits in list(zip(copies, results, strict=True))[:show]:
        out.print(results_table(f"{copy.path.name} ({copy.edit} of {copy.original.name})", hits))
    found = sum(1 for c, hits in zip(copies, results, strict=True) if hits and hits[0].uri == str(c.original))
    out.print(
        f"[bold]{found}/{len(copies)}[/] edited copies found their original first "
        f"(model {record.model}, weights {record.weights})."
    )
    if record.weights == "none":
        out.print("[yellow]weights none: a random network, so these results mean nothing[/]")


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each loads its own models and indexes).")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve the HTTP API: DeepDetect's routes (/info, /services, /predict) and the native /api/v1, with
    its OpenAPI schema and docs at /schema.

    Example: SIMSEARCH_API_TOKEN=secret simsearch serve --host 0.0.0.0 --port 8080 --workers 2
    """
    from granian import Granian
    from granian.constants import Interfaces

    settings = get_settings()
    if host not in _LOOPBACK and not (settings.api_token or settings.read_token):
        console.print(
            f"[yellow]warning:[/] serving on {host} without authentication: anyone who can reach this port can "
            "index and delete. Set SIMSEARCH_API_TOKEN (and SIMSEARCH_READ_TOKEN for search-only clients)."
        )
    engine = open_database(settings)  # starts the embedded server if needed, and migrates once for all workers
    os.environ["DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
    engine.dispose()
    console.print(f"simsearch {__version__} on http://{host}:{port} (docs at /schema), {workers} worker(s)")
    Granian(
        "simsearch.api.app:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=host,
        port=port,
        workers=workers,
        log_access=access_log,
    ).serve()


@app.command("config")
def config_cmd() -> None:
    """Print the settings simsearch reads from the environment, with their current values."""
    settings = get_settings()
    out.print(settings_table(), markup=False, highlight=False)
    out.print()
    for name in type(settings).model_fields:
        out.print(f"{name} = {getattr(settings, name)!r}", markup=False, highlight=False)


@app.command("version")
def version_cmd() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    try:
        app()
    except SimsearchError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        sys.exit(2 if exc.status < 500 else 1)
