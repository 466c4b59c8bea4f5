#!/usr/bin/env python3
"""The soak workload: one s3mirrorfs mount over a realistic tree on s3sim, read by several
readers at once for many minutes while S3 is cut and restored; the daemon's memory and
s3sim's request counters are sampled throughout. bench/run mounts and unmounts; this file
does the rest.

  soak.py sets KEYS                 s3sim --set arguments of bucket `soak` (one a line)
  soak.py manifest ENDPOINT DIR     list bucket `soak` (ETag = MD5 on s3sim): DIR/soak.md5
                                    (load.py's manifest form) and DIR/soak.sizes (key, size)
  soak.py drive --mnt M --pid P --sim URL --run DIR --minutes N [...]
                                    readers, samples every 10 s and the outages; see --help
  soak.py reader KIND --mnt M --run DIR --end EPOCH [...]   one reader (drive starts them)
  soak.py check-mirror MIRROR DIR   every file in the mirror against the manifest
  soak.py summarize DIR MIRROR_CHECK_JSON
                                    DIR/soak-summary.json from the samples and the readers' logs

The tree: KEYS / 100 directories `tree/dNNNN/` of 100 files each, 70 x 64 KiB (doc-NN),
20 x 256 KiB (img-NN), 8 x 1 MiB (pdf-NN) and 2 x 4 MiB (vid-NN), 25.4 MiB a directory,
plus 4 x 256 MiB under `big/`. s3sim generates the contents from the key, and the
manifest comes from its listing (its ETags are the contents' MD5, which load.py fetch
checks), so every read is checked against the manifest like the bench's other reads.

Readers (one process each), for the whole run:
  find   `find MNT -type f | wc -l`, the count checked
  cat    `cat` of a file, its MD5 checked: a file it read before (in the mirror: must read
         fine with S3 away), or one of a directory it has not touched (cold; a cold read
         also warms its directory's other files into the mirror), now and then a 256 MiB one
  cp     `cp -r` of a directory to scratch, every file checked: one copied before, or a new one
  ls     `ls -ln` of a random directory, names and sizes checked against the manifest
New (cold) picks are paced at --new-per-min directories a minute for cat and for cp, which
bounds the mirror's growth (about 2 x 25.4 MiB x that a minute); cached picks fill the rest.
Every operation is logged with its start, duration, result (ok, error, wrong) and error.
"""

import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the bench's S3 client)

BUCKET = "soak"
PER_DIR = 100
# (name, count, size) of each directory's files, in key order
CLASSES = [("doc", 70, 64 << 10), ("img", 20, 256 << 10), ("pdf", 8, 1 << 20), ("vid", 2, 4 << 20)]
BIG = (4, 256 << 20)
SAMPLE_S = 10
READERS = ["find", "cat", "cp", "ls"]
# per-operation time limits (a hang is an error, not a stuck soak)
TIMEOUT = {"find": 900, "cat": 300, "cp": 600, "ls": 300}
# pause between two operations of a reader
PAUSE = {"find": 2.0, "cat": 0.3, "cp": 3.0, "ls": 1.0}
# after S3 is back, errors within this many seconds count as recovery, not as errors while up
GRACE_S = 60


def ndirs(keys):
    return max(1, keys // PER_DIR)


def sets(keys):
    n = ndirs(keys)
    width = max(4, len(str(n - 1)))
    out = [f"{BIG[0]}:{BIG[1] >> 20}M:0:big/part-{{i:1}}.bin"]
    for d in range(n):
        for name, count, size in CLASSES:
            sz = f"{size >> 20}M" if size >= 1 << 20 else f"{size >> 10}K"
            out.append(f"{count}@{d * count}:{sz}:{count}:tree/d{{d:{width}}}/{name}-{{j:2}}.bin")
    for s in out:
        print(f"--set\n{s}")


def manifest(endpoint, out):
    s3 = load.client(endpoint)
    t0 = time.time()
    rows = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        rows += [(o["Key"], o["ETag"].strip('"'), o["Size"]) for o in page.get("Contents", [])]
    rows.sort()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "soak.md5.tmp"), "w") as f:
        f.writelines(f"{etag}  {key}\n" for key, etag, _ in rows)
    with open(os.path.join(out, "soak.sizes.tmp"), "w") as f:
        f.writelines(f"{key}\t{size}\n" for key, _, size in rows)
    os.rename(os.path.join(out, "soak.md5.tmp"), os.path.join(out, "soak.md5"))
    os.rename(os.path.join(out, "soak.sizes.tmp"), os.path.join(out, "soak.sizes"))
    print(f"manifest: {len(rows)} keys of {BUCKET}, {sum(r[2] for r in rows) / 2**30:.1f} GiB, "
          f"in {time.time() - t0:.1f}s")


class Manifest:
    def __init__(self, run):
        self.md5, self.size, self.dirs = {}, {}, {}
        with open(os.path.join(run, "soak.md5")) as f:
            for line in f:
                self.md5[line[34:].rstrip("\n")] = line[:32]
        with open(os.path.join(run, "soak.sizes")) as f:
            for line in f:
                key, size = line.rstrip("\n").split("\t")
                self.size[key] = int(size)
                d, _, name = key.rpartition("/")
                self.dirs.setdefault(d, []).append(name)
        self.tree = sorted(d for d in self.dirs if d.startswith("tree/"))
        self.big = sorted(k for k in self.size if k.startswith("big/"))


def md5_of_stream(stream):
    h = hashlib.md5()
    n = 0
    while chunk := stream.read(1 << 20):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def first_line(err):
    lines = [x for x in err.decode(errors="replace").splitlines() if x.strip()]
    return (lines[0] if lines else "").replace("\t", " ")[:200]


class Reader:
    def __init__(self, kind, a):
        self.kind, self.a = kind, a
        self.m = Manifest(a.run)
        self.rng = random.Random(f"{a.seed}-{kind}")
        self.log = open(os.path.join(a.run, f"ops-{kind}.tsv"), "a", buffering=1)
        self.t0 = time.time()
        # cold picks: directories not touched yet, taken in a random order; cat and cp draw
        # from halves of the tree, so that a cold pick of one is not warm from the other's
        self.fresh = [d for i, d in enumerate(self.m.tree) if i % 2 == (kind == "cp")]
        self.rng.shuffle(self.fresh)
        self.fresh_big = list(self.m.big)
        self.new_done = 0
        self.cached = []  # what this reader read whole and right: it is in the mirror now
        self.cached_big = []  # the same of the 256 MiB files, read again now and then only
        self.proc = None
        self.parent = os.getppid()

    def record(self, start, op, target, cached, result, nbytes, detail=""):
        self.log.write(f"{start:.3f}\t{time.time() - start:.3f}\t{op}\t{target}\t{int(cached)}\t"
                       f"{result}\t{nbytes}\t{detail}\n")

    def new_allowed(self):
        minutes = (time.time() - self.t0) / 60
        return self.fresh and self.new_done < 1 + self.a.new_per_min * minutes

    def run_cmd(self, argv, timeout, stdout=subprocess.DEVNULL):
        """(returncode or None on timeout, stdout bytes or None, stderr bytes)"""
        self.proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)
        try:
            out, err = self.proc.communicate(timeout=timeout)
            return self.proc.returncode, out, err
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None, None, b"timeout"
        finally:
            self.proc = None

    def op_find(self):
        start = time.time()
        want = len(self.m.size)
        rc, out, err = self.run_cmd(["bash", "-o", "pipefail", "-c", 'find "$1" -type f | wc -l', "find",
                                     self.a.mnt], TIMEOUT["find"], subprocess.PIPE)
        if rc != 0:
            self.record(start, "find", "/", False, "error", 0, first_line(err) or f"exit {rc}")
            return
        n = int(out.strip() or 0)
        if n == want:
            self.record(start, "find", "/", False, "ok", 0)
        else:
            self.record(start, "find", "/", False, "wrong", 0, f"listed {n} of {want}")

    def op_cat(self):
        cold = self.new_allowed()
        if not cold and not self.cached and not self.cached_big:
            time.sleep(1)
            return
        if cold:
            self.new_done += 1
            if self.fresh_big and self.rng.random() < 0.1:
                key = self.fresh_big.pop()
            else:
                d = self.fresh.pop()
                key = f"{d}/{self.rng.choice(self.m.dirs[d])}"
        elif self.cached_big and (not self.cached or self.rng.random() < 0.02):
            key = self.rng.choice(self.cached_big)
        else:
            key = self.rng.choice(self.cached)
        start = time.time()
        self.proc = p = subprocess.Popen(["cat", os.path.join(self.a.mnt, key)], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        # the bytes are hashed as they come; a read that hangs is killed at the time limit
        timer = threading.Timer(TIMEOUT["cat"], p.kill)
        timer.start()
        try:
            digest, n = md5_of_stream(p.stdout)
            err = p.stderr.read()
            rc = p.wait()
        finally:
            timer.cancel()
            self.proc = None
        if rc == -signal.SIGKILL:
            rc, err = None, b"timeout"
        if rc != 0:
            self.record(start, "cat", key, not cold, "error", n, first_line(err) or f"exit {rc}")
        elif digest != self.m.md5[key] or n != self.m.size[key]:
            self.record(start, "cat", key, not cold, "wrong", n, f"md5 {digest} size {n}")
        else:
            self.record(start, "cat", key, not cold, "ok", n)
            if cold:
                (self.cached_big if key in self.m.big else self.cached).append(key)

    def op_cp(self):
        cold = self.new_allowed()
        if not cold and not self.cached:
            time.sleep(1)
            return
        if cold:
            self.new_done += 1
            d = self.fresh.pop()
        else:
            d = self.rng.choice(self.cached)
        dst = os.path.join(self.a.scratch, "cp", os.path.basename(d))
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        start = time.time()
        rc, _, err = self.run_cmd(["cp", "-r", os.path.join(self.a.mnt, d), dst], TIMEOUT["cp"])
        # files cp could not read are named on its stderr (a partial copy may be left); every
        # other file must be there, whole and right
        failed = {name for name in self.m.dirs[d] if f"{d}/{name}".encode() in err}
        wrong, missing, nbytes = [], [], 0
        for name in self.m.dirs[d]:
            if name in failed:
                continue
            try:
                with open(os.path.join(dst, name), "rb") as f:
                    digest, n = md5_of_stream(f)
            except OSError:
                missing.append(name)
                continue
            nbytes += n
            if digest != self.m.md5[f"{d}/{name}"]:
                wrong.append(name)
        extra = sorted(set(os.listdir(dst)) - set(self.m.dirs[d])) if os.path.isdir(dst) else []
        shutil.rmtree(dst, ignore_errors=True)
        if rc == 0 and missing:
            wrong += missing  # cp said it copied them
        if not wrong and not extra and rc == 0:
            self.record(start, "cp", d, not cold, "ok", nbytes)
            if cold:
                self.cached.append(d)
        elif not wrong and not extra:
            detail = first_line(err) or f"exit {rc}"
            self.record(start, "cp", d, not cold, "error", nbytes,
                        f"{len(failed) + len(missing)} files not copied: {detail}")
        else:
            what = f"{len(wrong)} wrong ({', '.join(wrong[:3])})" if wrong else ""
            if extra:
                what += f" {len(extra)} not in the manifest ({', '.join(extra[:3])})"
            self.record(start, "cp", d, not cold, "wrong", nbytes, f"exit {rc}: {what.strip()}")

    def op_ls(self):
        d = self.rng.choice(self.m.tree)
        start = time.time()
        rc, out, err = self.run_cmd(["ls", "-ln", "--time-style=+%s", os.path.join(self.a.mnt, d)],
                                    TIMEOUT["ls"], subprocess.PIPE)
        if rc != 0:
            self.record(start, "ls", d, False, "error", 0, first_line(err) or f"exit {rc}")
            return
        got = {}
        for line in out.decode(errors="replace").splitlines():
            f = line.split(None, 6)
            if len(f) == 7:  # mode links uid gid size mtime name
                got[f[6]] = int(f[4])
        want = {name: self.m.size[f"{d}/{name}"] for name in self.m.dirs[d]}
        if got == want:
            self.record(start, "ls", d, False, "ok", 0)
        else:
            diff = sorted(set(got.items()) ^ set(want.items()))[:3]
            self.record(start, "ls", d, False, "wrong", 0, f"{len(got)} entries; differ: {diff}")

    def loop(self):
        op = getattr(self, f"op_{self.kind}")
        # a reader whose driver is gone (interrupted) stops too
        while time.time() < self.a.end and os.getppid() == self.parent:
            op()
            time.sleep(PAUSE[self.kind])


def reader(a):
    r = Reader(a.kind, a)

    def stop(*_):
        p = r.proc
        if p is not None:
            p.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    r.loop()


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0]) / 1024
                elif k == "Threads":
                    out[k] = int(v)
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        pass
    return out


def sim_call(url, path, method="GET"):
    req = urllib.request.Request(url + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def du_mib(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total / 2**20


SAMPLE_COLS = ["t", "elapsed_s", "phase", "rss_mib", "hwm_mib", "threads", "fds", "list", "head",
               "get", "other", "mib_served", "dropped", "conns", "mirror_mib"]


def drive(a):
    """Starts the readers, samples every SAMPLE_S s, cuts and restores S3, waits for the end."""
    duration = a.minutes * 60
    outage = a.outage_s if a.outage_s else max(10, round(duration * 4 / 60))
    t0 = time.time()
    end = t0 + duration
    windows = [(t0 + float(f) * duration, t0 + float(f) * duration + outage) for f in a.outages.split(",") if f]
    events = open(os.path.join(a.run, "events.tsv"), "w", buffering=1)
    events.write(f"{t0:.3f}\tstart\t{a.minutes} min, outages of {outage} s at {a.outages}\n")
    samples = open(os.path.join(a.run, "samples.tsv"), "w", buffering=1)
    samples.write("\t".join(SAMPLE_COLS) + "\n")
    base = json.loads(sim_call(a.sim, "/__sim/stats"))
    for k in READERS:
        open(os.path.join(a.run, f"ops-{k}.tsv"), "w").close()
    me = os.path.abspath(__file__)
    # an interrupt or SIGTERM still restores S3 and stops the readers (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    procs = [subprocess.Popen([sys.executable, me, "reader", k, "--mnt", a.mnt, "--run", a.run,
                               "--scratch", a.scratch, "--end", f"{end:.3f}", "--seed", str(a.seed),
                               "--new-per-min", str(a.new_per_min)]) for k in READERS]
    down = False
    pending = list(windows)

    def sample(now):
        st = proc_status(a.pid)
        s = json.loads(sim_call(a.sim, "/__sim/stats"))
        req, breq = s["requests"], base["requests"]
        row = [f"{now:.3f}", f"{now - t0:.1f}", "down" if down else "up",
               f"{st.get('VmRSS', 0):.1f}", f"{st.get('VmHWM', 0):.1f}", st.get("Threads", 0), st.get("fds", 0),
               *(req[k] - breq[k] for k in ("list", "head", "get", "other")),
               f"{(s['bytes_served'] - base['bytes_served']) / 2**20:.1f}",
               s["errors_injected"]["dropped"] - base["errors_injected"]["dropped"],
               s["connections"] - base["connections"], f"{du_mib(a.mirror):.0f}"]
        samples.write("\t".join(str(x) for x in row) + "\n")
        return st

    try:
        next_sample = t0
        while True:
            now = time.time()
            if pending and not down and now >= pending[0][0]:
                sim_call(a.sim, "/__sim/down", "POST")
                down = True
                events.write(f"{time.time():.3f}\tdown\n")
            if down and now >= pending[0][1]:
                sim_call(a.sim, "/__sim/up", "POST")
                down = False
                pending.pop(0)
                events.write(f"{time.time():.3f}\tup\n")
            if now >= next_sample:
                st = sample(now)
                if not st:
                    events.write(f"{now:.3f}\tdaemon gone\n")
                    break
                next_sample += SAMPLE_S
            if now >= end and all(p.poll() is not None for p in procs):
                break
            if now > end + max(TIMEOUT.values()) + 30:
                events.write(f"{now:.3f}\treaders stopped: past the end by the longest time limit\n")
                break
            time.sleep(0.2)
        sample(time.time())
    finally:
        if down:
            sim_call(a.sim, "/__sim/up", "POST")
            events.write(f"{time.time():.3f}\tup\n")
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        events.write(f"{time.time():.3f}\tend\n")


def check_mirror(mirror, run):
    """Every file of the mirror (but .s3mirrorfs/) holds the bytes the manifest says: the
    mirror is a backup, a wrong file in it is the worst outcome."""
    m = Manifest(run)
    files = nbytes = 0
    bad, unknown = [], []
    for dirpath, dirnames, names in os.walk(mirror):
        if dirpath == mirror and ".s3mirrorfs" in dirnames:
            dirnames.remove(".s3mirrorfs")
        for name in names:
            path = os.path.join(dirpath, name)
            key = os.path.relpath(path, mirror)
            if key not in m.md5:
                unknown.append(key)
                continue
            with open(path, "rb") as f:
                digest, n = md5_of_stream(f)
            files += 1
            nbytes += n
            if digest != m.md5[key] or n != m.size[key]:
                bad.append(key)
    res = {"files": files, "mib": round(nbytes / 2**20, 1), "bad": len(bad), "unknown": len(unknown),
           "bad_keys": bad[:10], "unknown_keys": unknown[:10]}
    print(json.dumps(res))


def read_tsv(path, cols=None):
    with open(path) as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    if cols is None:
        cols, lines = lines[0], lines[1:]
    return [dict(zip(cols, x)) for x in lines]


OP_COLS = ["start", "secs", "op", "target", "cached", "result", "bytes", "detail"]


def summarize(run, mirror_json):
    samples = read_tsv(os.path.join(run, "samples.tsv"))
    events = read_tsv(os.path.join(run, "events.tsv"), ["t", "event", "note"])
    t0 = float(events[0]["t"])
    t_end = next((float(e["t"]) for e in events if e["event"] == "end"), float(samples[-1]["t"]))
    windows, start = [], None
    for e in events:
        if e["event"] == "down":
            start = float(e["t"])
        elif e["event"] == "up" and start is not None:
            windows.append((start, float(e["t"])))
            start = None
    duration = float(events[0]["note"].split(" ")[0]) * 60

    def phase(s, e):
        for w0, w1 in windows:
            if s < w1 and e > w0:
                return "down"
        for _, w1 in windows:
            if w1 <= s < w1 + GRACE_S:
                return "after"
        return "up"

    readers = {}
    for k in READERS:
        ops = read_tsv(os.path.join(run, f"ops-{k}.tsv"), OP_COLS)
        r = {"ops": len(ops), "ok": 0, "errors_up": 0, "errors_down": 0, "errors_after": 0, "wrong": 0,
             "ops_down": 0, "cached_ops_down": 0, "cached_errors_down": 0, "cold_ops_down": 0,
             "cold_errors_down": 0, "mib_read": 0.0, "median_s": None, "examples": [],
             "last_error_after_restore_s": [None] * len(windows)}
        secs = []
        for o in ops:
            s, d = float(o["start"]), float(o["secs"])
            ph = phase(s, s + d)
            res = o["result"]
            r["mib_read"] += int(o["bytes"]) / 2**20
            secs.append(d)
            if ph == "down":
                r["ops_down"] += 1
                if o["cached"] == "1":
                    r["cached_ops_down"] += 1
                elif k in ("cat", "cp"):
                    r["cold_ops_down"] += 1
            if res == "ok":
                r["ok"] += 1
                continue
            if res == "wrong":
                r["wrong"] += 1
                r["examples"].append(f"+{s - t0:.0f}s {o['target']}: WRONG {o['detail']}")
                continue
            r[f"errors_{ph}"] += 1
            if ph == "down":
                if o["cached"] == "1":
                    r["cached_errors_down"] += 1
                elif k in ("cat", "cp"):
                    r["cold_errors_down"] += 1
            if ph != "down":
                for i, (_, w1) in enumerate(windows):
                    if s >= w1 and (i + 1 == len(windows) or s < windows[i + 1][0]):
                        r["last_error_after_restore_s"][i] = round(s + d - w1, 1)
            if ph == "up" and len(r["examples"]) < 5:
                r["examples"].append(f"+{s - t0:.0f}s {o['target']}: {o['detail']}")
        secs.sort()
        r["median_s"] = round(secs[len(secs) // 2], 3) if secs else None
        r["mib_read"] = round(r["mib_read"], 1)
        readers[k] = r

    def f(row, col):
        return float(row[col])

    el = [f(s, "elapsed_s") for s in samples]
    third = duration / 3
    warm = [s for s, e in zip(samples, el) if e >= third]
    mid = [f(s, "rss_mib") for s, e in zip(samples, el) if third <= e < 2 * third]
    last = [f(s, "rss_mib") for s, e in zip(samples, el) if e >= 2 * third]
    mid_max, last_max = (max(mid) if mid else None), (max(last) if last else None)
    flat = mid_max is not None and last_max is not None and last_max <= 1.10 * mid_max
    end = samples[-1]
    reqs = {k: int(end[k]) for k in ("list", "head", "get", "other", "dropped", "conns")}
    reqs["mib_served"] = float(end["mib_served"])
    with open(mirror_json) as fh:
        mirror = json.load(fh)
    wrong = sum(r["wrong"] for r in readers.values())
    errors_up = sum(r["errors_up"] for r in readers.values())
    cached_down = sum(r["cached_errors_down"] for r in readers.values())
    late = [x for r in readers.values() for x in r["last_error_after_restore_s"] if x is not None]
    verdict = []
    if wrong:
        verdict.append(f"{wrong} wrong answers")
    if mirror["bad"] or mirror["unknown"]:
        verdict.append(f"mirror: {mirror['bad']} bad, {mirror['unknown']} unknown files")
    if errors_up:
        verdict.append(f"{errors_up} errors while S3 was up")
    if cached_down:
        verdict.append(f"{cached_down} errors reading cached files while S3 was down")
    if not flat:
        verdict.append("RSS not flat")
    if len(windows) < len([x for x in events if x["event"] == "down"]):
        verdict.append("an outage was not restored")
    summary = {
        "minutes": duration / 60, "wall_s": round(t_end - t0, 1), "samples": len(samples),
        "keys": sum(1 for _ in open(os.path.join(run, "soak.md5"))),
        "outages": [[round(w0 - t0, 1), round(w1 - t0, 1)] for w0, w1 in windows],
        "grace_s": GRACE_S,
        "readers": readers,
        "rss": {"after_warmup": f(warm[0], "rss_mib") if warm else None, "middle_max": mid_max,
                "last_max": last_max, "end": f(end, "rss_mib"), "hwm_end": f(end, "hwm_mib"),
                "max": max(f(s, "rss_mib") for s in samples), "flat": flat,
                "threads_end": int(end["threads"]), "threads_max": max(int(s["threads"]) for s in samples),
                "fds_end": int(end["fds"]), "fds_max": max(int(s["fds"]) for s in samples)},
        "requests": reqs,
        "mirror_mib_end": float(end["mirror_mib"]),
        "mirror_check": mirror,
        "last_error_after_restore_s": max(late) if late else None,
        "verdict": "ok" if not verdict else "; ".join(verdict),
    }
    with open(os.path.join(run, "soak-summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    # one file of every operation, for the record
    with gzip.open(os.path.join(run, "soak-ops.tsv.gz"), "wt") as fh:
        fh.write("reader\t" + "\t".join(OP_COLS) + "\n")
        for k in READERS:
            with open(os.path.join(run, f"ops-{k}.tsv")) as g:
                for line in g:
                    fh.write(f"{k}\t{line}")
    print(summary["verdict"])


def main(argv):
    p = argparse.ArgumentParser(prog="soak.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sets")
    s.add_argument("keys", type=int)
    s = sub.add_parser("manifest")
    s.add_argument("endpoint")
    s.add_argument("out")
    s = sub.add_parser("drive")
    s.add_argument("--mnt", required=True)
    s.add_argument("--mirror", required=True, help="the mount's mirror directory (its size is sampled)")
    s.add_argument("--pid", required=True, type=int, help="the mount daemon")
    s.add_argument("--sim", required=True, help="s3sim's URL (control endpoints, counters)")
    s.add_argument("--run", required=True, help="holds soak.md5, soak.sizes; gets the logs")
    s.add_argument("--scratch", required=True)
    s.add_argument("--minutes", type=float, default=30)
    s.add_argument("--outages", default="0.30,0.65", help="start of each outage, as a fraction of the run")
    s.add_argument("--outage-s", type=float, default=0, help="length of each (default: 4/60 of the run, >= 10 s)")
    s.add_argument("--new-per-min", type=float, default=5)
    s.add_argument("--seed", default="20261203")
    s = sub.add_parser("reader")
    s.add_argument("kind", choices=READERS)
    s.add_argument("--mnt", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--scratch", required=True)
    s.add_argument("--end", required=True, type=float)
    s.add_argument("--new-per-min", type=float, default=5)
    s.add_argument("--seed", default="20261203")
    s = sub.add_parser("check-mirror")
    s.add_argument("mirror")
    s.add_argument("run")
    s = sub.add_parser("summarize")
    s.add_argument("run")
    s.add_argument("mirror_json")
    a = p.parse_args(argv[1:])
    if a.cmd == "sets":
        sets(a.keys)
    elif a.cmd == "manifest":
        manifest(a.endpoint, a.out)
    elif a.cmd == "drive":
        drive(a)
    elif a.cmd == "reader":
        reader(a)
    elif a.cmd == "check-mirror":
        check_mirror(a.mirror, a.run)
    elif a.cmd == "summarize":
        summarize(a.run, a.mirror_json)


if __name__ == "__main__":
    main(sys.argv)
