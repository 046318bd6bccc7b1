"""simsearch: image and object similarity search with Postgres as the system of record."""

import os

# FAISS and torch share one OpenMP runtime. Its idle threads spin after every parallel region by
# default, and on a small machine they starve the Postgres backend that joins the search's hits
# (measured by bench/: 3-4x slower single-query search on 2 cores). Sleeping threads cost little.
# Set before faiss/torch load it; export OMP_WAIT_POLICY=ACTIVE to get the spinning back.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
