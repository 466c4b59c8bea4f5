#!/usr/bin/env python3
"""Makes the benchmark dataset and loads it straight into the S3 server (not through the
latency relay, so loading costs no simulated latency).

  load.py dataset DIR            write DIR/bench/{large.bin,small/pNN/objNNN.bin} and DIR/bench.md5
                                 (deterministic bytes; kept if the manifest already matches)
  load.py upload ENDPOINT DIR    create bucket `bench` and upload DIR/bench into it
  load.py fetch ENDPOINT DIR     the other way round, for a server that generates the data set
                                 (s3sim): download bucket `bench` into DIR/bench and write
                                 DIR/bench.md5, each object checked against its ETag (its MD5)
  load.py scale ENDPOINT N       create bucket `bench-scale` with N small keys:
                                 a/dNNN/kNNNNNNN for the first N/10, b/... for the rest
  load.py list ENDPOINT BUCKET[/PREFIX]
                                 list every key (ListObjectsV2 pages), print the count
  load.py check-scale DIR        every file under DIR (but .s3mirrorfs/) holds its own key + "\\n";
                                 prints the number of files and of bad ones
  load.py follow-setup ENDPOINT DIR BUCKET QUEUE_ENDPOINT
                                 upload DIR/bench/small into BUCKET and queue one S3 created
                                 event per object on the bench's SQS server; prints the queue URL
  load.py check DIR MANIFEST PREFIX [AS]
                                 files of MANIFEST under PREFIX expected at DIR/AS...: prints
                                 "checked=N bad=M"
  load.py media-upload ENDPOINT DIR THUMB PAR HUGE
                                 create bucket `media`: photos/img-NNNN.jpg (500 x THUMB bytes),
                                 par/fN.bin (8 x PAR) and huge.bin (HUGE; sizes as 4M, 1G),
                                 deterministic bytes, and write its manifests into DIR (below)
  load.py media-manifest ENDPOINT DIR
                                 the manifests of bucket `media` as a server that generates it
                                 (s3sim) serves it: every object read back whole. DIR/media.md5
                                 (MD5s), DIR/media.head64.md5 (MD5s of the first 64 KiB),
                                 DIR/media.first (first byte, hex), DIR/media.sizes (bytes)
  load.py heads DIR BYTES        what a file manager's thumbnail pass does: list DIR, stat every
                                 entry and read the first BYTES of each file, in name order;
                                 prints "MD5  BASENAME(DIR)/NAME" of the bytes read per file
  load.py copy-floor SRC DST THREADS fsync|plain
                                 the disk's floor for a full mirror: copy every file under SRC
                                 into DST with THREADS threads, each into a temp name in its
                                 directory, renamed into place (fsync: each file fsynced before
                                 its rename, each directory once at the end, as durable as a
                                 mirror's copy), no network, no hashing
  load.py check-prefetch SUMMARY N first|nochange [DIR ENDPOINT BUCKET]
                                 prefetch --json's SUMMARY of a run over N keys: all downloaded
                                 (first) or all up to date (nochange), none failed; with DIR,
                                 DIR (but .s3mirrorfs/) holds N files, and 200 of them picked at
                                 random match the ETag (MD5) and size HEAD gives for their key at
                                 ENDPOINT/BUCKET. Prints "ok" or what is wrong

The scale keys are tiny on purpose: the scale rows measure per-key costs (listing, lookups,
bookkeeping, memory), not bandwidth.
"""

import concurrent.futures as cf
import hashlib
import json
import os
import random
import sys
import time

LARGE = 256 << 20
NPREF, NPER, SMALL = 20, 100, 64 << 10


def small_keys():
    return [f"small/p{p:02d}/obj{i:03d}.bin" for p in range(NPREF) for i in range(NPER)]


def scale_key(i, n):
    part = "a" if i < max(1, n // 10) else "b"
    return f"{part}/d{i // 1000:03d}/k{i:07d}"


def dataset(root):
    ds = os.path.join(root, "bench")
    manifest = os.path.join(root, "bench.md5")
    want = ["large.bin"] + small_keys()
    if os.path.exists(manifest):
        with open(manifest) as f:
            have = [line[34:].rstrip("\n") for line in f]
        if sorted(have) == sorted(want) and all(os.path.exists(os.path.join(ds, k)) for k in want):
            print(f"dataset: kept {ds} ({len(want)} files)")
            return
    rng = random.Random(20261203)
    lines = []
    for key in want:
        size = LARGE if key == "large.bin" else SMALL
        path = os.path.join(ds, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # randbytes takes at most 2**31 bits at a time
        data = b"".join(rng.randbytes(min(1 << 20, size - o)) for o in range(0, size, 1 << 20))
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)
        lines.append(f"{hashlib.md5(data).hexdigest()}  {key}\n")
    lines.sort(key=lambda line: line[34:])
    with open(manifest + ".tmp", "w") as f:
        f.writelines(lines)
    os.rename(manifest + ".tmp", manifest)
    print(f"dataset: wrote {ds} ({len(want)} files)")


def client(endpoint):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                      retries={"max_attempts": 5, "mode": "standard"}),
    )


def make_bucket(s3, name):
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


def put_all(s3, bucket, items, threads=16):
    """items: iterable of (key, bytes-or-callable)."""
    def put(item):
        key, body = item
        s3.put_object(Bucket=bucket, Key=key, Body=body() if callable(body) else body)

    with cf.ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(put, items, chunksize=64):
            pass


def upload(endpoint, root):
    from boto3.s3.transfer import TransferConfig

    s3 = client(endpoint)
    t0 = time.time()
    make_bucket(s3, "bench")
    ds = os.path.join(root, "bench")
    # multipart, as any real upload of a large object is: its ETag is md5-of-md5s-N
    s3.upload_file(os.path.join(ds, "large.bin"), "bench", "large.bin",
                   Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20,
                                         max_concurrency=8))

    def reader(k):
        return lambda: open(os.path.join(ds, k), "rb").read()

    put_all(s3, "bench", [(k, reader(k)) for k in small_keys()])
    n = s3.list_objects_v2(Bucket="bench", MaxKeys=1000)["KeyCount"]
    print(f"upload: bench holds large.bin + {len(small_keys())} small objects "
          f"(first page {n} keys) in {time.time() - t0:.1f}s")


def fetch(endpoint, root):
    s3 = client(endpoint)
    t0 = time.time()
    ds = os.path.join(root, "bench")
    objs = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench"):
        objs += [(o["Key"], o["ETag"].strip('"')) for o in page.get("Contents", [])]

    def get(item):
        key, etag = item
        path = os.path.join(ds, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        h = hashlib.md5()
        body = s3.get_object(Bucket="bench", Key=key)["Body"]
        with open(path + ".tmp", "wb") as f:
            while chunk := body.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
        os.rename(path + ".tmp", path)
        if h.hexdigest() != etag:
            raise SystemExit(f"fetch: {key}: md5 {h.hexdigest()} but ETag {etag}")
        return f"{etag}  {key}\n"

    with cf.ThreadPoolExecutor(16) as pool:
        lines = sorted(pool.map(get, objs), key=lambda line: line[34:])
    with open(os.path.join(root, "bench.md5.tmp"), "w") as f:
        f.writelines(lines)
    os.rename(os.path.join(root, "bench.md5.tmp"), os.path.join(root, "bench.md5"))
    print(f"fetch: {len(lines)} objects of bench into {ds} in {time.time() - t0:.1f}s")


HEAD_BYTES = 64 << 10


def size_bytes(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KMGkmg")) * mult


def media_keys(thumb, par, huge):
    """(key, size) of the media bucket, in S3 order."""
    return ([("huge.bin", huge)] + [(f"par/f{i}.bin", par) for i in range(8)]
            + [(f"photos/img-{i:04d}.jpg", thumb) for i in range(500)])


class Digest:
    """MD5 of a whole object, of its first HEAD_BYTES and its first byte, fed in chunks."""

    def __init__(self):
        self.md5, self.head, self.size, self.first = hashlib.md5(), hashlib.md5(), 0, ""

    def update(self, chunk):
        if self.size < HEAD_BYTES:
            self.head.update(chunk[:HEAD_BYTES - self.size])
        if not self.size and chunk:
            self.first = f"{chunk[0]:02x}"
        self.size += len(chunk)
        self.md5.update(chunk)


def write_media_manifests(root, digests):
    """digests: {key: Digest}, written as the four manifests of media-manifest."""
    os.makedirs(root, exist_ok=True)
    files = {"media.md5": lambda d: d.md5.hexdigest(), "media.head64.md5": lambda d: d.head.hexdigest(),
             "media.first": lambda d: d.first, "media.sizes": lambda d: str(d.size)}
    for name, value in files.items():
        path = os.path.join(root, name)
        with open(path + ".tmp", "w") as f:
            f.writelines(f"{value(digests[k])}  {k}\n" for k in sorted(digests))
        os.rename(path + ".tmp", path)


def media_upload(endpoint, root, thumb, par, huge):
    import io

    from boto3.s3.transfer import TransferConfig

    s3 = client(endpoint)
    t0 = time.time()
    make_bucket(s3, "media")
    cfg = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)
    digests = {}

    def put(item):
        key, size = item
        rng = random.Random(key)
        data = b"".join(rng.randbytes(min(1 << 20, size - o)) for o in range(0, size, 1 << 20))
        d = Digest()
        d.update(data)
        s3.upload_fileobj(io.BytesIO(data), "media", key, Config=cfg)
        digests[key] = d

    keys = media_keys(size_bytes(thumb), size_bytes(par), size_bytes(huge))
    with cf.ThreadPoolExecutor(8) as pool:
        # the big ones first, one at a time (memory), then the rest 8 at a time
        for item in keys[:9]:
            put(item)
        list(pool.map(put, keys[9:]))
    write_media_manifests(root, digests)
    print(f"media-upload: media holds {len(keys)} objects in {time.time() - t0:.1f}s")


def media_manifest(endpoint, root):
    s3 = client(endpoint)
    t0 = time.time()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="media")
            for o in page.get("Contents", [])]

    def get(key):
        d = Digest()
        body = s3.get_object(Bucket="media", Key=key)["Body"]
        while chunk := body.read(1 << 20):
            d.update(chunk)
        return key, d

    with cf.ThreadPoolExecutor(16) as pool:
        digests = dict(pool.map(get, keys))
    write_media_manifests(root, digests)
    print(f"media-manifest: {len(keys)} objects of media read back in {time.time() - t0:.1f}s")


def heads(root, nbytes):
    nbytes = int(nbytes)
    base = os.path.basename(root.rstrip("/"))
    with os.scandir(root) as it:
        entries = sorted((e for e in it if e.is_file()), key=lambda e: e.name)
    out = []
    for e in entries:
        e.stat()
        with open(e.path, "rb") as f:
            data = f.read(nbytes)
        out.append(f"{hashlib.md5(data).hexdigest()}  {base}/{e.name}\n")
    sys.stdout.writelines(out)


def copy_floor(src, dst, threads, mode):
    durable = {"fsync": True, "plain": False}[mode]
    files = []
    for d, _, names in os.walk(src):
        rel = os.path.relpath(d, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        files += [os.path.join(rel, n) for n in names]

    def one(rel):
        with open(os.path.join(src, rel), "rb") as f:
            data = f.read()
        final = os.path.join(dst, rel)
        tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)

    with cf.ThreadPoolExecutor(int(threads)) as ex:
        list(ex.map(one, files))
    if durable:
        for d, _, _ in os.walk(dst):
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(fd)
            os.close(fd)


def sqs_call(endpoint, op, body):
    """One call to an SQS JSON-protocol endpoint (the bench's own queue server)."""
    import urllib.request

    req = urllib.request.Request(endpoint, data=json.dumps(body).encode(), method="POST", headers={
        "X-Amz-Target": f"AmazonSQS.{op}", "Content-Type": "application/x-amz-json-1.0"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def follow_setup(server, root, bucket, queue_endpoint):
    """small/ uploaded into a new bucket, and one S3 `ObjectCreated:Put` event per
    object (as S3 sends them: URL-encoded keys, the ETags S3 answered) queued on the
    bench's SQS server at `queue_endpoint`. Prints the queue URL."""
    from urllib.parse import quote_plus

    s3 = client(server)
    make_bucket(s3, bucket)
    ds = os.path.join(root, "bench")
    url = sqs_call(queue_endpoint, "CreateQueue", {"QueueName": bucket})["QueueUrl"]
    etags = {}

    def put(key):
        body = open(os.path.join(ds, key), "rb").read()
        etags[key] = (s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"'), len(body))

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, small_keys()))
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    events = [json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": now, "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(k, safe="/"), "size": etags[k][1], "eTag": etags[k][0],
                          "sequencer": f"{i:016X}"}}}]}) for i, k in enumerate(small_keys())]
    for i in range(0, len(events), 10):
        sqs_call(queue_endpoint, "SendMessageBatch", {"QueueUrl": url, "Entries": [
            {"Id": str(j), "MessageBody": b} for j, b in enumerate(events[i:i + 10])]})
    print(url)


def scale(endpoint, n):
    s3 = client(endpoint)
    t0 = time.time()
    make_bucket(s3, "bench-scale")
    keys = (scale_key(i, n) for i in range(n))
    put_all(s3, "bench-scale", ((k, (k + "\n").encode()) for k in keys), threads=24)
    print(f"scale: bench-scale holds {n} keys ({max(1, n // 10)} under a/) in {time.time() - t0:.1f}s")


def list_keys(endpoint, target):
    bucket, _, prefix = target.partition("/")
    prefix = prefix + "/" if prefix and not prefix.endswith("/") else prefix
    n = 0
    for page in client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        n += page.get("KeyCount", 0)
    print(f"listed={n}")


def check_scale(root):
    files = bad = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root and ".s3mirrorfs" in dirnames:
            dirnames.remove(".s3mirrorfs")
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            files += 1
            with open(path, "rb") as f:
                if f.read() != (rel + "\n").encode():
                    bad += 1
    print(f"files={files} bad={bad}")


def check(root, manifest, prefix, as_=""):
    checked = bad = 0
    with open(manifest) as f:
        for line in f:
            digest, key = line[:32], line[34:].rstrip("\n")
            if not key.startswith(prefix):
                continue
            checked += 1
            path = os.path.join(root, as_ + key[len(prefix):])
            try:
                h = hashlib.md5()
                with open(path, "rb") as g:
                    while chunk := g.read(1 << 20):
                        h.update(chunk)
                if h.hexdigest() != digest:
                    bad += 1
            except OSError:
                bad += 1
    print(f"checked={checked} bad={bad}")


def check_prefetch(summary, n, what, root=None, endpoint=None, bucket=None):
    n = int(n)
    wrong = []
    try:
        with open(summary) as f:
            lines = [line for line in f if line.startswith("{")]
        s = json.loads(lines[-1])
    except (OSError, ValueError, IndexError) as e:
        print(f"no summary ({e})")
        return
    want = {"listed": n, "failed": 0}
    want.update({"downloaded": n} if what == "first" else {"downloaded": 0, "up_to_date": n})
    for k, v in want.items():
        if s.get(k) != v:
            wrong.append(f"{k}={s.get(k)} not {v}")
    if s.get("error"):
        wrong.append(f"error: {s['error']}")
    if root:
        paths = []
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath == root and ".s3mirrorfs" in dirnames:
                dirnames.remove(".s3mirrorfs")
            paths.extend(os.path.join(dirpath, name) for name in filenames)
        if len(paths) != n:
            wrong.append(f"files={len(paths)} not {n}")
        s3 = client(endpoint)
        bad = 0
        for path in random.Random(n).sample(paths, min(200, len(paths))):
            head = s3.head_object(Bucket=bucket, Key=os.path.relpath(path, root))
            with open(path, "rb") as f:
                data = f.read()
            if hashlib.md5(data).hexdigest() != head["ETag"].strip('"') or len(data) != head["ContentLength"]:
                bad += 1
        if bad:
            wrong.append(f"{bad} of 200 sampled files differ from S3")
    print("; ".join(wrong) if wrong else "ok")


def main(argv):
    cmds = {
        "dataset": (dataset, 1),
        "upload": (upload, 2),
        "fetch": (fetch, 2),
        "follow-setup": (follow_setup, 4),
        "scale": (lambda e, n: scale(e, int(n)), 2),
        "list": (list_keys, 2),
        "check-scale": (check_scale, 1),
        "check": (check, None),
        "check-prefetch": (check_prefetch, None),
        "media-upload": (media_upload, 5),
        "media-manifest": (media_manifest, 2),
        "heads": (heads, 2),
        "copy-floor": (copy_floor, 4),
    }
    if len(argv) < 2 or argv[1] not in cmds:
        sys.exit(__doc__)
    fn, nargs = cmds[argv[1]]
    args = argv[2:]
    if nargs is not None and len(args) != nargs:
        sys.exit(__doc__)
    fn(*args)


if __name__ == "__main__":
    main(sys.argv)
