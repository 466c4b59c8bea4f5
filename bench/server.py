#!/usr/bin/env python3
"""moto's S3 server for the benchmark, with the scale set loaded in-process.

  server.py HOST PORT SCALE_KEYS

Loading 100,000 keys through moto's HTTP front end takes minutes (~200 PUT/s on two
cores); putting them into its backend before it starts serving takes seconds. What is
served afterwards is the same moto server `moto_server` runs (werkzeug, threaded).
"""

import sys
import time

from werkzeug.serving import run_simple

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from load import scale_key  # noqa: E402


def load_scale(n):
    t0 = time.time()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket("bench-scale", "us-east-1")
    for i in range(n):
        key = scale_key(i, n)
        backend.put_object("bench-scale", key, (key + "\n").encode())
    print(f"server: bench-scale holds {n} keys, loaded in {time.time() - t0:.1f}s", flush=True)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if n > 0:
        load_scale(n)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
