"""The process's Prometheus metrics that code records as it runs (HTTP requests, search latency, images
ingested). A bottom-layer module holding only the metric objects, so that core modules record without
importing the faces; what is read from the database at scrape time is api/observe.py's collector.

Labels are bounded: a route is its template (`/api/v1/services/{name}`, never the raw path), a backend is
faiss, annoy or exact, a service is one the operator created."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Requests run from a millisecond (health) to minutes (an upload that embeds a thousand images).
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# A search (without embedding the query) is sub-millisecond on a small index, seconds on a huge exact tail.
_SEARCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

HTTP_REQUESTS = Counter(
    "simsearch_http_requests",
    "HTTP requests answered, by method, route template (`unmatched` when no route matched) and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "simsearch_http_request_duration_seconds",
    "Time to answer an HTTP request, from its first byte in to its last byte out, by method and route template.",
    ["method", "route"],
    buckets=_REQUEST_BUCKETS,
)
SEARCH_SECONDS = Histogram(
    "simsearch_search_duration_seconds",
    "Time of one kNN search call (the index, the exact tail and the SQL join; not embedding the query), "
    "by the backend of the generation searched: faiss, annoy, or exact (no generation loaded).",
    ["backend"],
    buckets=_SEARCH_BUCKETS,
)
IMAGES_INGESTED = Counter(
    "simsearch_ingested_images",
    "Images indexed (committed), by service: rate() of it is images per second.",
    ["service"],
)
