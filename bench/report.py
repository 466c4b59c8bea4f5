#!/usr/bin/env python3
"""Turns a bench run's raw.tsv and meta.env into RESULTS.md and comparison.png (and, with
prefetch-scale rows, prefetch-scale.png and prefetch-scale.tsv; after a soak,
soak-summary.json and soak-samples.tsv into a section of RESULTS.md and soak.png).

  report.py RESULTS_DIR
  report.py --splice FROM_DIR INTO_DIR
        put the "Prefetch at scale" section of FROM_DIR/RESULTS.md into INTO_DIR/RESULTS.md
        (in place of the one there, or before its closing "Raw numbers" line) with its plot
        and rows, leaving every other row of INTO_DIR as it is
  report.py --add-server SERVER FROM_DIR INTO_DIR
        copy the rows FROM_DIR ran on SERVER (moto or sim) into INTO_DIR/raw.tsv, which must
        have none of that server, and note in INTO_DIR/meta.env which run they come from (its
        section of RESULTS.md says so); then run report.py INTO_DIR

Every cell is the median over the runs whose command succeeded and whose output matched
the dataset's md5 manifest; a row with any wrong or failed run says so and never counts
as a win. If RESULTS_DIR/analysis.md exists it is appended (the written diagnosis).
"""

import csv
import json
import os
import re
import statistics
import sys

MOUNT_TOOLS = ["s3mirrorfs", "s3fs", "rclone", "mount-s3"]
SYNC_TOOLS = ["s3mirrorfs", "awscli", "awscli-tuned", "rclone", "rclone-tuned"]
# the disk's floor for a full mirror: no network, no hashing, only the files written
SYNC_FLOORS = ["disk-floor-fsync", "disk-floor-plain"]
READS = ["ttfb_cold", "large_cold", "large_again", "large_settled", "large_disk", "find_cold",
         "find_warm", "small_cold", "small_warm", "small_disk"]
MEDIA = ["thumbs_cold", "thumbs_full", "par8", "mem1g"]
SYNCS = ["sync_first", "sync_nochange"]
LABELS = {
    "ttfb_cold": "time to first byte, cold large file (fresh mount)",
    "large_cold": "cold read, 256 MiB",
    "large_again": "read again right after the cold read, 256 MiB",
    "large_settled": "read again once the daemon settled, 256 MiB (page cache)",
    "large_disk": "read from the tool's disk cache, 256 MiB (after drop_caches)",
    "thumbs_cold": "thumbnail pass: first 64 KiB of 500 images, cold",
    "thumbs_full": "then 50 of the images in full",
    "par8": "8 readers at once, 8 different cold files",
    "mem1g": "daemon peak RSS after streaming huge.bin (1 GiB by default), MiB",
    "large_remount": "read after a remount, 256 MiB (mirror, page cache dropped)",
    "find_cold": "find, 2,001 files, cold",
    "find_warm": "find, 2,001 files, listing known",
    "find_remount": "find after a remount (saved listings)",
    "small_cold": "cold read, 2,000 x 64 KiB",
    "small_warm": "warm read, 2,000 x 64 KiB (page cache)",
    "small_disk": "read from the tool's disk cache, 2,000 x 64 KiB",
    "sync_first": "full mirror of 2,000 objects",
    "sync_nochange": "no-change mirror run",
}
SERVER_NOTE = {
    "moto": "moto behind the relay",
    "sim": "s3sim (the bench's synthetic S3)",
}
TOOL_NOTE = {
    "s3fs": "s3fs (use_cache)",
    "rclone": "rclone (mount: --vfs-cache-mode full; sync: defaults)",
    "awscli": "aws s3 sync",
    "mount-s3": "mount-s3 (--cache)",
    "local": "local files",
    "fuse-floor": "FUSE floor (bindfs over the local files)",
}
SYNC_NAMES = {"s3mirrorfs": "s3mirrorfs prefetch", "awscli": "aws s3 sync (defaults)",
              "awscli-tuned": "aws s3 sync (max_concurrent_requests 64)",
              "rclone": "rclone sync (defaults)", "rclone-tuned": "rclone sync (--transfers 64 --checkers 64)",
              "disk-floor-fsync": "disk floor (local copy, 64 threads, fsync)",
              "disk-floor-plain": "disk floor (local copy, 64 threads, no fsync)"}
# rows of the old names
RENAMED = {"large_warm": "large_settled"}


RUNS = 1


def load(results):
    rows = []
    with open(os.path.join(results, "raw.tsv")) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            # results from before the server column ran on moto
            if not r.get("server") and r["tool"] != "local":
                r["server"] = "moto"
            r["workload"] = RENAMED.get(r["workload"], r["workload"])
            rows.append(r)
    meta = {}
    path = os.path.join(results, "meta.env")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                meta[k] = v
    return rows, meta


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class Cell:
    """All runs of one (tool, workload)."""

    def __init__(self, runs):
        self.runs = runs
        good = [r for r in runs if r["status"] == "ok" and r["check"] in ("", "ok")]
        self.bad = [r for r in runs if r not in good]
        self.secs = [num(r["seconds"]) for r in good if num(r["seconds"]) is not None]

    def ok(self):
        return bool(self.secs) and not self.bad

    def median(self):
        return statistics.median(self.secs) if self.ok() else None

    def med_of(self, col):
        vals = [num(r.get(col)) for r in self.runs if num(r.get(col)) is not None]
        return statistics.median(vals) if vals else None

    def text(self, reqs=False):
        if not self.runs:
            return ""
        if not self.ok():
            why = self.bad[0]["status"] if self.bad[0]["status"] != "ok" else self.bad[0]["check"]
            return f"**FAIL** ({len(self.bad)}/{len(self.runs)}: {why})"
        s = fmt(self.median())
        if len(self.secs) > 1:
            s += f" ({fmt(min(self.secs))}-{fmt(max(self.secs))}, {len(self.secs)} runs)"
        elif RUNS > 1:
            s += " (1 run)"
        if reqs:
            s += f"<br>{req_text(self)}"
        return s


def req_text(cell):
    parts = []
    for col, name in (("get", "GET"), ("head", "HEAD"), ("list", "LIST"), ("other", "other")):
        v = cell.med_of(col)
        if v:
            parts.append(f"{v:.0f} {name}")
    text = ", ".join(parts) if parts else "0 req"
    cpu = cell.med_of("server_cpu_s")
    if cpu:
        text += f"; server CPU {fmt(cpu)} s"
    return text


def fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def cells(rows):
    by = {}
    for r in rows:
        by.setdefault((r["tool"], r["workload"]), []).append(r)
    return {k: Cell(v) for k, v in by.items()}


def best(cs, tools, wl):
    cands = [(cs[(t, wl)].median(), t) for t in tools if (t, wl) in cs and cs[(t, wl)].ok()]
    return min(cands) if cands else (None, None)


def par8_bytes(cell):
    """Bytes the 8 readers read (the row's note), or None."""
    for r in cell.runs:
        m = re.search(r"bytes=(\d+)", r.get("note") or "")
        if m:
            return int(m.group(1))
    return None


def mibps(cell):
    n = par8_bytes(cell)
    return n / cell.median() / 1048576 if n and cell.median() else None


def good_median(cell, col):
    """Median of column `col` over the runs that read the right bytes, or None."""
    vals = [num(r.get(col)) for r in cell.runs
            if r["status"] == "ok" and r["check"] in ("", "ok") and num(r.get(col)) is not None]
    return statistics.median(vals) if vals else None


def rss_of(cell):
    """Median VmHWM of the runs that read the right bytes (mem1g), or None."""
    return good_median(cell, "rss_mib") if cell.ok() else None


def rss_split(cell):
    """Median peak private memory (RssAnon) and mapped file pages (RssFile: program and
    libraries) of the runs that read the right bytes (mem1g), as text; "" before they were
    sampled."""
    anon, files = good_median(cell, "anon_mib"), good_median(cell, "file_mib")
    if anon is None or files is None:
        return ""
    return f"private {fmt(anon)} + mapped files {fmt(files)}"


def runs_note(cell):
    n = len(cell.secs)
    return f"{n} run{'s' if n != 1 else ''}"


def targets(cs):
    """(row, s3mirrorfs, reference, target, ratio, met) per row of one server's cells.
    The reference is the best peer of the row (the lowest median, tuned or not), or the
    local copy; a row s3mirrorfs failed or has not run is not met."""
    out = []
    peers = [t for t in MOUNT_TOOLS if t != "s3mirrorfs"]
    sync_peers = [t for t in SYNC_TOOLS if t != "s3mirrorfs"]

    def mine(wl):
        return cs.get(("s3mirrorfs", wl))

    def me_text(c, value=None, unit="s"):
        if not c:
            return "-"
        if not c.ok():
            return c.text()
        v = c.median() if value is None else value
        return f"{fmt(v)}{'' if unit == 's' else ' ' + unit} ({runs_note(c)})"

    def vs_peer(wl, tools, factor, label):
        c = mine(wl)
        if not c:
            return
        m = c.median()
        b, who = best(cs, tools, wl)
        ratio = m / b if m is not None and b else None
        ref = f"{fmt(b)} ({who}, {runs_note(cs[(who, wl)])})" if who else "-"
        out.append((LABELS[wl], me_text(c), ref, label, ratio, ratio is not None and ratio <= factor))

    def vs_local(wl, factor, label, ref_wl=None):
        c = mine(wl)
        if not c:
            return
        m = c.median()
        lc = cs.get(("local", ref_wl or wl))
        b = lc.median() if lc else None
        ratio = m / b if m is not None and b else None
        ref = f"{fmt(b)} (local{', ' + LABELS[ref_wl].split(',')[0] if ref_wl else ''})" if b else "-"
        # what the same read costs through FUSE alone: the floor of any mount
        floor = cs.get(("fuse-floor", ref_wl or wl))
        if b and floor and floor.ok() and floor.median():
            ref += f"; FUSE floor {fmt(floor.median())} ({floor.median() / b:.2f}x local)"
        out.append((LABELS[wl], me_text(c), ref, label, ratio, ratio is not None and ratio <= factor))

    vs_peer("ttfb_cold", peers, 1.0, "<= 1x the best peer")
    vs_peer("large_cold", peers, 1.0, "<= 1x the best peer")
    vs_local("large_again", 2.0, "<= 2x a local page-cache read")
    vs_local("large_settled", 1.2, "<= 1.2x local (page cache)")
    vs_local("large_disk", 1.2, "<= 1.2x local (both after drop_caches)")
    vs_peer("find_cold", peers, 0.5, "<= 0.5x the best peer")
    c = mine("find_warm")
    if c:
        m = c.median()
        out.append((LABELS["find_warm"], me_text(c), "-", "< 0.1 s", None, m is not None and m < 0.1))
    vs_peer("small_cold", peers, 0.25, "<= 0.25x the best peer")
    vs_local("small_warm", 1.5, "<= 1.5x local (page cache)")
    vs_local("small_disk", 2.0, "<= 2x local (both after drop_caches)")
    vs_peer("thumbs_cold", peers, 0.5, "<= 0.5x the best peer")
    c = mine("thumbs_full")
    if c:
        b, who = best(cs, peers, "thumbs_full")
        m = c.median()
        out.append((LABELS["thumbs_full"], me_text(c), f"{fmt(b)} ({who})" if who else "-", "- (shown)",
                    m / b if m is not None and b else None, None))
    c = mine("par8")
    if c:
        m = mibps(c)
        cands = [(mibps(cs[(t, "par8")]), t) for t in peers if (t, "par8") in cs and cs[(t, "par8")].ok()]
        cands = [x for x in cands if x[0]]
        b, who = max(cands) if cands else (None, None)
        ratio = m / b if m and b else None
        out.append((LABELS["par8"] + ", aggregate MiB/s",
                    me_text(c, m, "MiB/s") + (f", {fmt(c.median())} s" if c.ok() else ""),
                    f"{fmt(b)} MiB/s ({who}, {fmt(cs[(who, 'par8')].median())} s)" if who else "-",
                    ">= the best peer's throughput", ratio, ratio is not None and ratio >= 1.0))
    vs_peer("sync_first", sync_peers, 0.5, "<= 0.5x the best sync (defaults or tuned)")
    floors = [(t, cs.get((t, "sync_first"))) for t in SYNC_FLOORS]
    floors = [f"{fmt(c.median())} {t.rsplit('-', 1)[1]}" for t, c in floors if c and c.ok()]
    if floors and out and out[-1][0] == LABELS["sync_first"]:
        out[-1] = out[-1][:2] + (out[-1][2] + "; disk floor " + " / ".join(floors),) + out[-1][3:]
    vs_peer("sync_nochange", sync_peers, 0.5, "<= 0.5x the best, 0 GET/HEAD")
    c = mine("sync_nochange")
    if c and out[-1][0] == LABELS["sync_nochange"]:
        gh = (c.med_of("get") or 0) + (c.med_of("head") or 0)
        if gh:
            out[-1] = out[-1][:3] + (out[-1][3] + f" (sent {gh:.0f})", out[-1][4], False)
    c = mine("mem1g")
    if c:
        m = rss_of(c)
        cands = [(rss_of(cs[(t, "mem1g")]), t) for t in peers if (t, "mem1g") in cs]
        cands = [x for x in cands if x[0] is not None]
        b, who = min(cands) if cands else (None, None)
        ratio = m / b if m is not None and b else None
        met = m is not None and m <= 64 and (b is None or m <= b)
        split = rss_split(c)
        me = me_text(c, m, "MiB") + (f"; {split}" if split else "")
        ref = "-"
        if who:
            split = rss_split(cs[(who, "mem1g")])
            ref = f"{fmt(b)} MiB ({who}" + (f"; {split}" if split else "") + ")"
        out.append((LABELS["mem1g"], me, ref,
                    "<= 64 MiB and the lowest of the mounts", ratio, met))
    return out


def scale_points(cs):
    pts = {}
    for (tool, wl), c in cs.items():
        if not wl.startswith("scale_"):
            continue
        name, _, n = wl.rpartition("_")
        pts.setdefault(name, {})[int(n)] = c
    return pts


def server_text(sv, meta, rows):
    wls = sorted({r["workload"].split("_")[0] for r in rows if r.get("server") == sv})
    if sv == "moto":
        how = (f"moto on 127.0.0.1 behind the bench's relay, which holds every response chunk "
               f"{meta.get('delay_ms', '?')} ms (pipelined)")
    elif sv == "sim":
        how = f"{meta.get('s3sim', 's3sim')} (its relay adds no delay)"
    else:
        how = sv
    return f"{how}, for {', '.join(wls)}"


def mem_section(cs):
    walks = [cs.get(("s3mirrorfs", f"mem_walk{i}")) for i in (1, 2, 3)]
    if not any(walks):
        return []
    n = next((c.runs[0]["note"].split(" ")[0] for c in walks if c), "?")
    n = f"{int(n):,}" if n.isdigit() else n
    L = [f"## Long-running mount memory (s3mirrorfs; {n} keys, 1,000 files a directory; "
         f"{SERVER_NOTE.get(walks[0].runs[0].get('server', '') if walks[0] else '', '')})\n",
         "`find MNT -type f | wc -l` three times on one mount, `echo 2 > /proc/sys/vm/drop_caches` "
         "between walks (the kernel forgets its dentries and inodes, so the daemon is asked "
         "again); the daemon's memory after each walk.\n",
         "| walk | seconds | requests | VmRSS, MiB | VmHWM, MiB |", "|---|---|---|---|---|"]
    for i, c in enumerate(walks, 1):
        if not c:
            continue
        L.append(f"| {i} | {c.text()} | {req_text(c)} | {fmt(c.med_of('rss_mib'))} | "
                 f"{fmt(c.med_of('hwm_mib'))} |")
    rss = [c.med_of("rss_mib") if c else None for c in walks]
    hwm = max((c.med_of("hwm_mib") or 0 for c in walks if c), default=0)
    ok_rss = all(r is not None and r < 128 for r in rss) and all(c and c.ok() for c in walks)
    # within 1 MiB: what the allocator keeps or returns between walks is not growth
    flat = rss[1] is not None and rss[2] is not None and rss[2] <= rss[1] + 1
    L.append("")
    L.append("| target | value | met |\n|---|---|---|")
    L.append(f"| RSS < 128 MiB after every walk | max VmRSS {fmt(max((r for r in rss if r is not None), default=None))} MiB"
             f" (VmHWM {fmt(hwm)} MiB) | {'yes' if ok_rss else '**no**'} |")
    L.append(f"| walk 3 not above walk 2 (VmRSS, within 1 MiB) | {fmt(rss[1])} -> {fmt(rss[2])} MiB | "
             f"{'yes' if flat else '**no**'} |")
    L.append("")
    return L


def bigdir_section(cs, meta):
    st, ls, st16, same = (cs.get(("s3mirrorfs", w)) for w in
                          ("bigdir_stat", "bigdir_ls", "bigdir_stat16", "bigdir_stat16same"))
    if not any((st, ls, st16, same)):
        return []
    n = meta.get("bigdir_keys", "?")
    try:
        n = f"{int(n):,}"
    except ValueError:
        pass
    srv = next((c.runs[0].get("server", "") for c in (st, ls, st16) if c), "")
    L = [f"## One big directory (s3mirrorfs; {n} files in one directory; {SERVER_NOTE.get(srv, srv)})\n",
         "| row | seconds | requests | VmRSS / VmHWM, MiB | target | met |", "|---|---|---|---|---|---|"]

    def reqs(c):
        return sum(c.med_of(k) or 0 for k in ("get", "head", "list", "other"))

    def mem(c):
        return f"{fmt(c.med_of('rss_mib'))} / {fmt(c.med_of('hwm_mib'))}"

    if st:
        met = st.ok() and reqs(st) <= 2
        L.append(f"| stat of one name, fresh mount | {st.text()} | {req_text(st)} | {mem(st)} | "
                 f"<= 2 requests | {'yes' if met else '**no**'} |")
    if ls:
        L.append(f"| `ls \\| wc -l` of the directory | {ls.text()} | {req_text(ls)} | {mem(ls)} | "
                 f"every name listed | {'yes' if ls.ok() else '**no**'} |")
    ttl = meta.get('bigdir_ttl', '?')
    # After the TTL the kernel asks for `big` itself again too: one LIST of the root.
    if st16:
        lists = st16.med_of("list") or 0
        met = st16.ok() and lists <= 17
        L.append(f"| 16 parallel stats of 16 names after the metadata TTL ({ttl} s) ran out | "
                 f"{st16.text()} | {req_text(st16)} | {mem(st16)} | one small LIST a name, "
                 f"no listing of the directory (+1: `big/`) | {'yes' if met else '**no**'} ({lists:.0f} LIST) |")
    if same:
        lists = same.med_of("list") or 0
        met = same.ok() and lists <= 2
        L.append(f"| 16 parallel stats of one name after the TTL ran out | "
                 f"{same.text()} | {req_text(same)} | {mem(same)} | 1 LIST, not 16 (+1: `big/`) | "
                 f"{'yes' if met else '**no**'} ({lists:.0f} LIST) |")
    L.append("")
    return L


PSCALE_RUNS = {
    "first": "into an empty mirror",
    "nochange": "no change (`--list-workers 16`, the default)",
    "serial": "no change, `--list-workers 1`",
    "invfirst": "`--inventory`, into an empty mirror",
    "invnochange": "`--inventory` (newest report), no change",
}
PSCALE_LAYOUTS = {"tree": "tree, 1,000 a dir, 1 KiB", "flat": "one directory, 0 B"}
PSCALE_TITLE = "## Prefetch at scale"


def pscale_cells(cs):
    """{(run, layout, keys): Cell} of the prefetch-scale rows."""
    out = {}
    for (tool, wl), c in cs.items():
        parts = wl.split("_")
        if tool == "s3mirrorfs" and len(parts) == 4 and parts[0] == "pscale" and parts[3].isdigit():
            out[(parts[1], parts[2], int(parts[3]))] = c
    return out


def first_get(c):
    """Seconds until a run's first GET, from its note (median over runs), or None."""
    got = [float(m.group(1)) for r in c.runs
           for m in [re.search(r"first GET after ([0-9.]+) s", r.get("note", ""))] if m]
    return statistics.median(got) if got else None


def pscale_section(cs, meta):
    ps = pscale_cells(cs)
    if not ps:
        return []
    ns = sorted({n for (_, _, n) in ps})
    big = ns[-1]
    L = [f"{PSCALE_TITLE} (s3mirrorfs prefetch; {SERVER_NOTE['sim']}, "
         f"{meta.get('s3sim', '').partition('), ')[2] or 'see s3sim'})\n",
         f"Run of {meta.get('date', '?')} on {meta.get('nproc', '?')} cores (load "
         f"{meta.get('load', '?')} at the start, {meta.get('load_end', '?')} at the end), the "
         f"mirrors on {meta.get('pscale_fs', '?')}; one run per row. The machine was shared with other builds, so the seconds are noisy; the ratios "
         "between rows run minutes apart are what these rows are for. Peak RSS is the prefetch "
         "process's (`/usr/bin/time -v`, i.e. VmHWM); requests are counted at the relay (all "
         "buckets; an `--inventory` run also reads the report's bucket). *listing, s* is the "
         "time from the start until the last LIST reached s3sim. A no-change run that sends a "
         "GET or HEAD to the source bucket, or an `--inventory` run that lists it, is a FAIL."
         + (" The mirrors were on a tmpfs (removing a million-file mirror from the shared disk "
            "took longer than making it): writes and fsync cost less there than on a disk, so the "
            "runs into an empty mirror are faster than they would be on one; listing, memory and "
            "requests are the same." if meta.get("pscale_fs") == "tmpfs" else "") + "\n",
         "*first GET, s* is the time until s3sim saw the run's first GET (runs into an empty "
         "mirror from a listing; rows from before it was recorded show -): before the last LIST, "
         "downloads started while the listing went on.\n",
         "| keys | layout | run | seconds | listing, s | first GET, s | peak RSS, MiB | LIST | GET | HEAD | source bucket |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = [(r, lay) for lay in PSCALE_LAYOUTS for r in PSCALE_RUNS]
    for n in ns:
        for r, lay in order:
            c = ps.get((r, lay, n))
            if not c:
                continue
            src = c.runs[0].get("note", "").partition("source bucket ")[2].partition(": ")[2]
            secs = fmt(c.median()) if c.ok() else c.text()
            first = first_get(c)
            L.append(f"| {n:,} | {PSCALE_LAYOUTS[lay]} | {PSCALE_RUNS[r]} | {secs} | "
                     f"{fmt(c.med_of('list_s'))} | {fmt(first) if first is not None else '-'} | "
                     f"{fmt(c.med_of('rss_mib'))} | "
                     f"{c.med_of('list') or 0:.0f} | {c.med_of('get') or 0:.0f} | "
                     f"{c.med_of('head') or 0:.0f} | {src} |")
    L.append("")

    def yes(met):
        return "yes" if met else "**no**"

    L.append("| target | measured | met |\n|---|---|---|")
    for lay in PSCALE_LAYOUTS:
        for n in ns:
            par, ser = ps.get(("nochange", lay, n)), ps.get(("serial", lay, n))
            if not (par and ser and par.ok() and ser.ok()):
                continue
            whole = ser.median() / par.median()
            lp, ls = par.med_of("list_s"), ser.med_of("list_s")
            lst = ls / lp if lp and ls else None
            tgt = "listing >= 4x faster in parts than serial" + (
                "" if n == big else " (the target is at the largest size; shown for the trend)")
            L.append(f"| {tgt}: {n:,} keys, {PSCALE_LAYOUTS[lay]} | listing "
                     f"{fmt(ls)} s serial / {fmt(lp)} s = **{lst:.1f}x**; whole no-change run "
                     f"{fmt(ser.median())} / {fmt(par.median())} s = {whole:.1f}x | "
                     f"{yes(lst is not None and lst >= 4) if n == big else '-'} |")
    for lay in PSCALE_LAYOUTS:
        c = ps.get(("first", lay, big))
        first, listing = (first_get(c), c.med_of("list_s")) if c else (None, None)
        if first is not None and listing:
            L.append(f"| downloads start while the listing goes on: {big:,} keys, "
                     f"{PSCALE_LAYOUTS[lay]} | first GET after {fmt(first)} s, last LIST after "
                     f"{fmt(listing)} s | {yes(first < listing)} |")
    firsts = [(n, ps.get(("first", "tree", n))) for n in ns]
    firsts = [(n, c) for n, c in firsts if c and c.ok()]
    rss_all = {n: max((c.med_of("rss_mib") or 0) for (r, lay, m), c in ps.items()
                      if m == n and lay == "tree" and not r.startswith("inv"))
               for n in ns if any(m == n for (_, _, m) in ps)}
    if big in rss_all:
        L.append(f"| peak RSS < 150 MiB at {big:,} keys (tree, listing runs) | "
                 f"{fmt(rss_all[big])} MiB | {yes(rss_all[big] < 150)} |")
    inv_rss = max((ps[k].med_of("rss_mib") or 0 for k in ps if k[0].startswith("inv")), default=None)
    if inv_rss:
        L.append(f"| peak RSS < 150 MiB at {big:,} keys (`--inventory`) | {fmt(inv_rss)} MiB | "
                 f"{yes(inv_rss < 150)} |")
    if len(rss_all) >= 2:
        lo, hi = rss_all[ns[0]], rss_all[big]
        L.append(f"| peak RSS within 20% between {ns[0]:,} and {big:,} keys | {fmt(lo)} -> {fmt(hi)} MiB "
                 f"(x{hi / lo:.2f}; {(hi - lo) * 1048576 / (big - ns[0]):.0f} B a key more) | "
                 f"{yes(lo > 0 and hi <= lo * 1.2)} |")
    if len(firsts) >= 2:
        (n0, c0), (n1, c1) = firsts[0], firsts[-1]
        t = c1.median() / c0.median()
        L.append(f"| time linear in keys (into an empty mirror, within 20%) | {fmt(c0.median())} s -> "
                 f"{fmt(c1.median())} s: x{t:.1f} for keys x{n1 / n0:.0f} | {yes(t <= 1.2 * n1 / n0)} |")
    nochange = [(k, c) for k, c in ps.items() if k[0] in ("nochange", "serial", "invnochange")]
    if nochange:
        bad = [f"{k[0]} {k[1]} {k[2]:,}" for k, c in nochange if not c.ok()]
        L.append(f"| no-change runs: 0 GET/HEAD of the source bucket | {len(nochange) - len(bad)} of "
                 f"{len(nochange)} runs clean{': FAIL ' + ', '.join(bad) if bad else ''} | {yes(not bad)} |")
    inv = [c for k, c in ps.items() if k[0].startswith("inv")]
    if inv:
        listed = [c for c in inv if "LIST of the source" in " ".join(r["check"] for r in c.runs)]
        L.append(f"| `--inventory`: no LIST of the source bucket | "
                 f"{'none' if not listed else 'LISTs sent'} in {len(inv)} runs | {yes(not listed)} |")
    L.append("")
    L.append("Plot: [prefetch-scale.png](prefetch-scale.png); rows: "
             "[prefetch-scale.tsv](prefetch-scale.tsv).\n")
    return L


def load_soak(results):
    path = os.path.join(results, "soak-summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def soak_section(soak, cs):
    c = cs.get(("s3mirrorfs", "soak"))
    if not soak:
        if c:  # a soak that did not get as far as a summary
            return ["## Soak (s3mirrorfs)\n", f"**FAIL**: {c.runs[0]['status']} {c.runs[0]['check']}\n"]
        return []
    rd, rss, q, mc = soak["readers"], soak["rss"], soak["requests"], soak["mirror_check"]
    outs = ", ".join(f"{a / 60:.1f}-{b / 60:.1f}" for a, b in soak["outages"])
    L = [f"## Soak: one mount read for {soak['minutes']:.0f} minutes while S3 is cut off twice "
         f"(s3mirrorfs; {soak['keys']:,} keys; s3sim)\n",
         "Four readers at once for the whole run, each logging every operation: `find MNT -type f "
         "| wc -l` (count checked), `cat` of a file (MD5 checked; a file it read before, or one of "
         "a directory nobody read yet), `cp -r` of a directory to scratch (every file checked; one "
         "copied before, or a new one) and `ls -ln` of a random directory (names and sizes "
         "checked). The tree: directories of 100 files, 70 x 64 KiB, 20 x 256 KiB, 8 x 1 MiB and "
         "2 x 4 MiB, and 4 files of 256 MiB. s3sim went down (connections closed unanswered, "
         f"bodies cut) at minutes {outs}; the mount talks to s3sim directly. Errors are counted "
         f"while S3 is up, while it is down (an operation overlapping an outage) and in the "
         f"{soak['grace_s']} s after a restore. Memory and s3sim's counters every 10 s: "
         "[soak-samples.tsv](soak-samples.tsv); every operation: "
         "[soak-ops.tsv.gz](soak-ops.tsv.gz); plot: [soak.png](soak.png).\n",
         "| reader | operations | ok | errors while up | errors while down: cached / cold | "
         "errors after a restore | wrong answers | MiB read | median s |",
         "|---|---|---|---|---|---|---|---|---|"]
    for k, r in rd.items():
        down = (f"{r['cached_errors_down']} of {r['cached_ops_down']} / {r['cold_errors_down']} of "
                f"{r['cold_ops_down']}" if k in ("cat", "cp") else f"{r['errors_down']} of {r['ops_down']}")
        L.append(f"| {k} | {r['ops']:,} | {r['ok']:,} | {r['errors_up']} | {down} | {r['errors_after']} | "
                 f"{r['wrong']} | {r['mib_read']:,.0f} | {fmt(r['median_s'])} |")
    wrong = sum(r["wrong"] for r in rd.values())
    up = sum(r["errors_up"] for r in rd.values())
    cached_ops = sum(r["cached_ops_down"] for r in rd.values())
    cached_err = sum(r["cached_errors_down"] for r in rd.values())
    late = soak["last_error_after_restore_s"]

    def yes(b):
        return "yes" if b else "**no**"

    L += ["", "| target | value | met |", "|---|---|---|",
          f"| no wrong answer (bytes, counts, listings) | {wrong} | {yes(wrong == 0)} |",
          f"| every file in the mirror correct afterwards | {mc['files']:,} files, {mc['mib']:,.0f} MiB: "
          f"{mc['bad']} bad, {mc['unknown']} unknown | {yes(mc['bad'] == 0 and mc['unknown'] == 0)} |",
          f"| no error while S3 is up | {up} | {yes(up == 0)} |",
          f"| files read before keep reading while S3 is down | {cached_err} errors in {cached_ops} "
          f"operations | {yes(cached_err == 0 and cached_ops > 0)} |",
          f"| errors stop after a restore | "
          + ("none after either restore" if late is None else f"last one {late:.0f} s after a restore")
          + f" (window {soak['grace_s']} s) | {yes(late is None or late <= soak['grace_s'])} |",
          f"| RSS flat: last third's max within 10 % of the middle third's | {fmt(rss['middle_max'])} -> "
          f"{fmt(rss['last_max'])} MiB | {yes(rss['flat'])} |",
          "",
          "| daemon | |", "|---|---|",
          f"| VmRSS after warm-up (a third in) / at the end / max, MiB | {fmt(rss['after_warmup'])} / "
          f"{fmt(rss['end'])} / {fmt(rss['max'])} |",
          f"| VmHWM at the end, MiB | {fmt(rss['hwm_end'])} |",
          f"| threads at the end / max | {rss['threads_end']} / {rss['threads_max']} |",
          f"| open files at the end / max | {rss['fds_end']} / {rss['fds_max']} |",
          f"| mirror at the end, MiB | {soak['mirror_mib_end']:,.0f} |",
          "",
          "| requests at s3sim | |", "|---|---|",
          f"| LIST / HEAD / GET / other | {q['list']:,} / {q['head']:,} / {q['get']:,} / {q['other']:,} |",
          f"| MiB served | {q['mib_served']:,.0f} |",
          f"| connections / requests dropped while down | {q['conns']:,} / {q['dropped']:,} |",
          "", f"Verdict: **{soak['verdict']}**.", ""]
    ex = [f"{k}: {e}" for k, r in rd.items() for e in r["examples"]]
    if ex:
        L.append("Errors while up and wrong answers (first few):\n")
        L += [f"- `{e}`" for e in ex[:10]]
        L.append("")
    return L


def plot_soak(results, soak):
    import gzip

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(results, "soak-samples.tsv")) as f:
        sm = list(csv.DictReader(f, delimiter="\t"))
    if not sm:
        return
    mins = [float(r["elapsed_s"]) / 60 for r in sm]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(13, 7.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 2]})
    for a in (ax, ax2):
        for i, (w0, w1) in enumerate(soak["outages"]):
            a.axvspan(w0 / 60, w1 / 60, color="#d62728", alpha=0.15, lw=0,
                      label="S3 down" if i == 0 and a is ax else None)
    ax.plot(mins, [float(r["rss_mib"]) for r in sm], color="#d62728", label="VmRSS")
    ax.plot(mins, [float(r["hwm_mib"]) for r in sm], color="#ff9896", ls="--", label="VmHWM")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("daemon memory, MiB")
    axm = ax.twinx()
    axm.plot(mins, [float(r["mirror_mib"]) / 1024 for r in sm], color="#7f7f7f", ls=":", label="mirror, GiB")
    axm.set_ylim(bottom=0)
    axm.set_ylabel("mirror on disk, GiB")
    axm.legend(fontsize=8, loc="lower center")
    ax.set_title(f"s3mirrorfs soak: {soak['keys']:,} keys, 4 readers, {soak['minutes']:.0f} min, "
                 f"S3 cut off twice ({soak['verdict']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    # requests per second in each sample interval, and the readers' errors as ticks
    colors = {"list": "#1f77b4", "get": "#2ca02c", "head": "#9467bd"}
    for k, color in colors.items():
        v = [int(r[k]) for r in sm]
        rate = [max(0, (b - a) / max(1e-9, float(y["elapsed_s"]) - float(x["elapsed_s"])))
                for a, b, x, y in zip(v, v[1:], sm, sm[1:])]
        if any(rate):
            ax2.plot(mins[1:], rate, color=color, label=f"{k.upper()}/s")
    ops = os.path.join(results, "soak-ops.tsv.gz")
    if os.path.exists(ops):
        t0 = float(sm[0]["t"]) - float(sm[0]["elapsed_s"])
        with gzip.open(ops, "rt") as f:
            errs = [(float(r["start"]) - t0) / 60 for r in csv.DictReader(f, delimiter="\t")
                    if r["result"] != "ok"]
        if errs:
            ax2.plot(errs, [0] * len(errs), "|", color="black", ms=12, label="a reader's error")
    ax2.set_ylabel("requests/s at s3sim")
    ax2.set_xlabel("minutes")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(os.path.join(results, "soak.png"), dpi=100)


def cell_text(c, wl, reqs):
    """A cell of the every-tool tables: seconds (par8: and MiB/s; mem1g: VmHWM first)."""
    if not c.ok():
        return c.text()
    if wl == "mem1g":
        split = rss_split(c)
        return f"{fmt(rss_of(c))} MiB" + (f" ({split})" if split else "") + f"; {c.text(reqs=reqs)}"
    t = c.text(reqs=reqs)
    if wl == "par8" and mibps(c):
        t = f"{fmt(mibps(c))} MiB/s; " + t
    return t


def server_section(sv, meta, cs):
    L = []
    classic = any(wl in READS + MEDIA + SYNCS for (_, wl) in cs)
    if not classic:
        return L
    L.append(f"## On {SERVER_NOTE.get(sv, sv)}\n")
    if meta.get(f"from_run_{sv}"):
        L.append(f"These rows come from an earlier run than the rest: {meta[f'from_run_{sv}']}.\n")
    if sv == "moto":
        L.append(f"moto on 127.0.0.1 behind the bench's relay, which holds every response chunk "
                 f"{meta.get('delay_ms', '?')} ms (pipelined). ")
    elif sv == "sim":
        L.append(f"{meta.get('s3sim', 's3sim')}: S3's first-byte latency and per-connection and "
                 "aggregate throughput caps, behind a relay that only counts. ")
    media = meta.get(f"media_{sv}")
    if media and any(wl in MEDIA + ["ttfb_cold"] for (_, wl) in cs):
        L.append(f"Bucket `media` here: photos/ {media.split(', ')[0]} images, par/ "
                 f"{media.split(', ')[1]} files, huge.bin {media.split(', ')[2].replace('1 x ', '')}"
                 + (" (scaled down from s3sim's: moto takes uploads slowly and holds every object itself)."
                    if sv == "moto" else ".") + "\n")
    else:
        L.append("\n")
    L.append("### Targets\n")
    L.append("| row | s3mirrorfs | best peer (or local) | target | ratio | met |\n|---|---|---|---|---|---|")
    for wl, m, ref, tgt, ratio, met in targets(cs):
        r = f"{ratio:.2f}x" if ratio is not None else "-"
        L.append(f"| {wl} | {m} | {ref} | {tgt} | {r} | {'-' if met is None else 'yes' if met else '**no**'} |")
    L.append("")

    tools = [t for t in ["s3mirrorfs", "s3fs", "rclone", "mount-s3", "local", "fuse-floor"]
             if any((t, wl) in cs for wl in READS + MEDIA)]
    if tools:
        L.append("### Reads through the mount (seconds; requests at the relay)\n")
        L.append("| workload | " + " | ".join(TOOL_NOTE.get(t, t) for t in tools) + " |")
        L.append("|---|" + "---|" * len(tools))
        for wl in READS + ["find_remount", "large_remount"] + MEDIA:
            if not any((t, wl) in cs for t in tools):
                continue
            cellsx = []
            for t in tools:
                c = cs.get((t, wl))
                cellsx.append(cell_text(c, wl, t not in ("local", "fuse-floor")) if c else "")
            L.append(f"| {LABELS[wl]} | " + " | ".join(cellsx) + " |")
        daemon = [(t, cs.get((t, "daemon"))) for t in tools if (t, "daemon") in cs]
        if daemon:
            L.append("| daemon peak RSS over the bench bucket's rows, MiB (VmHWM) | " + " | ".join(
                fmt(cs[(t, "daemon")].med_of("rss_mib")) if (t, "daemon") in cs else "" for t in tools) + " |")
            L.append("| cache dir on disk afterwards, MiB (du) | " + " | ".join(
                fmt(cs[(t, "daemon")].med_of("disk_mib")) if (t, "daemon") in cs else "" for t in tools) + " |")
            c = cs.get(("s3mirrorfs", "daemon"))
            if c:
                wrong = [r["check"] for r in c.runs if r["check"] != "ok"]
                state = "all 2,001 objects complete and correct" if not wrong else f"**{wrong[0]}**"
                L.append(f"\nAfter each unmount the s3mirrorfs mirror held: {state}.")
        L.append("")
        if any(wl in MEDIA + ["ttfb_cold"] for (_, wl) in cs):
            L.append("ttfb, thumbnails, par8 and mem1g each run on a fresh mount of bucket `media` with "
                     "an empty cache and the page cache dropped. *again* starts the moment the cold "
                     "`md5sum` returned (its requests include what the daemon still did after the cold "
                     "read); *settled* once no request passed the relay for a second. The thumbnail "
                     "pass lists photos/, stats each entry and reads its first 64 KiB, as a file "
                     "manager does (`bench/load.py heads`); the 8 readers are `cat`s at once. "
                     "The RSS of mem1g is the daemon's VmHWM; *private* and *mapped files* are the "
                     "peaks of its RssAnon (heap, stacks, buffers) and RssFile (its program and "
                     "shared libraries, as far as mapped), sampled every 50 ms while it streamed.\n")

    stools = [t for t in SYNC_TOOLS + SYNC_FLOORS if any((t, wl) in cs for wl in SYNCS)]
    if stools:
        L.append("### Mirroring small/ (2,000 x 64 KiB) into an empty directory, then again\n")
        L.append("| | " + " | ".join(SYNC_NAMES.get(t, t) for t in stools) + " |")
        L.append("|---|" + "---|" * len(stools))
        for wl in SYNCS:
            L.append(f"| {LABELS[wl]} (s) | " + " | ".join(
                cs[(t, wl)].text(reqs=True) if (t, wl) in cs else "" for t in stools) + " |")
            L.append(f"| {wl}: peak RSS, MiB | " + " | ".join(
                fmt(cs[(t, wl)].med_of("rss_mib")) if (t, wl) in cs else "" for t in stools) + " |")
        L.append("| on disk, MiB (du) | " + " | ".join(
            fmt(cs[(t, "sync_first")].med_of("disk_mib")) if (t, "sync_first") in cs else "" for t in stools) + " |")
        L.append("\nDefaults: rclone 4 transfers, 8 checkers; aws 10 concurrent requests. Tuned: "
                 "`rclone sync --transfers 64 --checkers 64`; aws with `max_concurrent_requests = 64` "
                 "and `max_queue_size = 10000` in an AWS config file the bench writes. s3mirrorfs "
                 "prefetch runs with its default `--concurrency 64`.\n")
    return L


def write_md(results, rows, meta, cs):
    L = []
    L.append("# Benchmark results\n")
    wls = {r["workload"] for r in rows}
    # a soak is one run of one mount straight at s3sim: the header of the compared rows
    # (runs per row, the relay, peers, cold/warm/disk) says nothing true about it
    soak_only = wls == {"soak"}
    reads = any(wl in READS for wl in wls)
    if soak_only:
        L.append(f"Run of {meta.get('date', '?')} with `bench/run`"
                 f" (the soak alone: one run; {meta.get('wall_s', '?')} s in all).\n")
    else:
        L.append(f"Run of {meta.get('date', '?')} with `bench/run`"
                 f" (up to {meta.get('runs', '?')} run{'' if meta.get('runs') == '1' else 's'} per row, median shown, min-max in brackets;"
                 + (f" {int(meta.get('scale_keys', '0')):,} scale keys;" if scale_points(cs) else "")
                 + f" {meta.get('wall_s', '?')} s in all).\n")
    L.append("| machine | |\n|---|---|")
    for k in ("nproc", "mem", "cpu", "kernel", "os", "load", "load_end"):
        if k in meta:
            L.append(f"| {k} | {meta[k]} |")
    L.append("\n| tool | version |\n|---|---|")
    # a peer's version only where it has rows: bench/run records every peer it found
    tools = {r["tool"] for r in rows}
    for k in ("s3mirrorfs", "s3fs", "rclone", "awscli", "mount-s3", "bindfs", "moto", "s3sim", "fuse3"):
        if k in meta and (k not in MOUNT_TOOLS + SYNC_TOOLS or k == "s3mirrorfs" or k in tools):
            L.append(f"| {k} | {meta[k]} |")
    L.append("")
    servers = sorted({r.get("server") for r in rows if r.get("server")})
    if soak_only:
        L.append(f"Server: {meta.get('s3sim', 's3sim')}. The mount talks to s3sim directly, not "
                 "through the bench's relay: the outages are s3sim's own, and the requests are "
                 "s3sim's counts. Seconds are wall clock.\n")
    else:
        L.append("Servers: " + "; ".join(server_text(sv, meta, rows) for sv in servers) + ". "
                 "Requests count at the relay in front of each server"
                 + (" (the soak's mount talks to s3sim directly, which counts them). " if "soak" in wls else ". ")
                 + "cold = fresh mount, empty cache dir, `echo 3 > /proc/sys/vm/drop_caches`; "
                 "again = read again the moment the cold read returned; settled = again once the "
                 "daemon's traffic stopped (page cache); disk = after drop_caches, from the tool's own "
                 "cache or mirror. Cold reads are timed with `md5sum` and compared with the dataset's "
                 "manifest; other reads with `cat`, then checked the same way. "
                 "Seconds are wall clock. Every row says which server it ran on: a section per server "
                 "below. Medians of the runs shown; a peer with fewer runs than s3mirrorfs (s3fs: "
                 "`RUNS_s3fs`, it is slow on small files) says how many"
                 + ("; the peers' small-file rows ran once (`SMALL_ONCE`: about 100 s each)"
                    if meta.get("small_once") else "")
                 + ".\n")
    if "mount-s3" not in meta and reads:
        L.append("mount-s3 was not measured: no binary was given (`MOUNT_S3=`); it is not in any "
                 "package registry this machine reaches.\n")

    # one section per server with the rows that ran on it (the local rows read that server's
    # data set; older raw files have local rows without a server: they go with every server)
    order = [sv for sv in ("sim", "moto") if sv in servers] + [sv for sv in servers if sv not in ("sim", "moto")]
    for sv in order:
        srows = [r for r in rows if r.get("server") == sv or (r["tool"] == "local" and not r.get("server"))]
        L.extend(server_section(sv, meta, cells(srows)))

    pts = scale_points(cs)
    if ("s3mirrorfs", "follow_drain") in cs:
        L.append("## Following 2,000 created events (s3mirrorfs; no peer follows a bucket)\n")
        L.append("| | follow --once (drains the queue) | prefetch of the same objects |")
        L.append("|---|---|---|")
        drain, pf = cs.get(("s3mirrorfs", "follow_drain")), cs.get(("s3mirrorfs", "follow_prefetch"))
        L.append("| seconds until the mirror is complete | " + (drain.text(reqs=True) if drain else "")
                 + " | " + (pf.text(reqs=True) if pf else "") + " |")
        L.append("| peak RSS, MiB | " + (fmt(drain.med_of("rss_mib")) if drain else "")
                 + " | " + (fmt(pf.med_of("rss_mib")) if pf else "") + " |")
        L.append("\nThe queue already holds one `ObjectCreated:Put` event per object when follow "
                 "starts. The queue is the bench's own SQS server (`bench/sqs_server.py`) behind a "
                 "relay with the same latency; moto's SQS spends about half a second of CPU per "
                 "receive with 2,000 messages queued, which would measure moto, not the follower.\n")

    if pts:
        L.append("## Scale (s3mirrorfs; one run)\n")
        if pts.get("scale_prefetch"):
            ns_ = sorted(pts["scale_prefetch"])
            cells_ = [pts["scale_prefetch"][n] for n in ns_]
            peak = max((r for r in (c.med_of("rss_mib") for c in cells_) if r is not None), default=None)
            lin = ""
            if len(ns_) == 2 and all(c.median() for c in cells_):
                lin = f"; time x{cells_[1].median() / cells_[0].median():.1f} for keys x{ns_[1] / ns_[0]:.0f}"
            L.append(f"Target: prefetch time linear in keys, RSS < 150 MiB: "
                     + ", ".join(f"{n:,} keys: {fmt(c.median())} s" for n, c in zip(ns_, cells_))
                     + f"{lin}; peak RSS {fmt(peak)} MiB "
                     + f"({'met' if peak is not None and peak < 150 else '**not met**'}).\n")
        ns = sorted({n for d in pts.values() for n in d})
        L.append("| | " + " | ".join(f"{n:,} keys" for n in ns) + " |")
        L.append("|---|" + "---|" * len(ns))
        names = {"scale_list": "server floor: list every key (boto3), s",
                 "scale_prefetch": "prefetch into an empty mirror, s",
                 "scale_nochange": "prefetch, nothing changed, s",
                 "scale_find_cold": "find through a fresh mount, s",
                 "scale_find_warm": "find again (listing known), s"}
        for name, label in names.items():
            if name not in pts:
                continue
            L.append(f"| {label} | " + " | ".join(
                pts[name][n].text(reqs=True) if n in pts[name] else "" for n in ns) + " |")
            if name != "scale_list":
                L.append(f"| {name.replace('scale_', '')}: peak RSS, MiB | " + " | ".join(
                    fmt(pts[name][n].med_of("rss_mib")) if n in pts[name] else "" for n in ns) + " |")
        if any(r.get("server") == "moto" and r["workload"].startswith("scale_") for r in rows):
            L.append("\nmoto's ListObjectsV2 costs time in proportion to the whole bucket for every page "
                     "(see the server floor row), so a listing of N keys costs the server O(N^2); growth "
                     "beyond linear that the floor row also shows is the server's, not the tool's.\n")

    L.extend(mem_section(cs))
    L.extend(bigdir_section(cs, meta))
    L.extend(pscale_section(cs, meta))
    L.extend(soak_section(load_soak(results), cs))

    counted = ("requests are s3sim's counts" if soak_only else
               "requests are counted at the relay, including background requests a daemon sent "
               "before the traffic settled" + ("; the soak's at s3sim" if "soak" in wls else ""))
    L.append(f"Raw numbers: [raw.tsv](raw.tsv) (one line per run; {counted}). "
             + ("Plot: [comparison.png](comparison.png).\n" if os.path.exists(os.path.join(results, "comparison.png"))
                or any(wl in READS + SYNCS for (_, wl) in cs) else "\n"))
    ap = os.path.join(results, "analysis.md")
    if os.path.exists(ap):
        with open(ap) as f:
            L.append(f.read())
    with open(os.path.join(results, "RESULTS.md"), "w") as f:
        f.write("\n".join(L).rstrip() + "\n")


def plot(results, meta, rows, cs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"s3mirrorfs": "#d62728", "s3fs": "#1f77b4", "rclone": "#2ca02c",
              "mount-s3": "#9467bd", "awscli": "#ff7f0e", "awscli-tuned": "#ffbb78",
              "rclone-tuned": "#98df8a", "local": "#7f7f7f", "fuse-floor": "#bcbd22",
              "disk-floor-fsync": "#17becf", "disk-floor-plain": "#9edae5"}
    groups = READS + [m for m in MEDIA if m != "mem1g"] + SYNCS
    order = ["s3mirrorfs", "s3fs", "rclone", "mount-s3", "awscli", "awscli-tuned",
             "rclone-tuned", "local", "fuse-floor", "disk-floor-fsync", "disk-floor-plain"]
    servers = [sv for sv in ("sim", "moto") if any(r.get("server") == sv and r["workload"] in groups
                                                   for r in rows)]
    panels = []
    for sv in servers:
        scs = cells([r for r in rows if r.get("server") == sv or (r["tool"] == "local" and not r.get("server"))])
        tools = [t for t in order if any((t, g) in scs for g in groups)]
        if tools:
            panels.append((sv, scs, tools))
    pts = scale_points(cs)
    if not panels:
        return  # a scale-only run has no comparison to draw
    fig, axes = plt.subplots(len(panels), 2 if pts else 1, figsize=(20 if pts else 16, 6.5 * len(panels)),
                             gridspec_kw={"width_ratios": [3, 1]} if pts else None, squeeze=False)
    for k, (sv, scs, tools) in enumerate(panels):
        ax = axes[k][0]
        groups = [g for g in READS + [m for m in MEDIA if m != "mem1g"] + SYNCS
                  if any((t, g) in scs for t in tools)]
        width = 0.85 / len(tools)
        for i, t in enumerate(tools):
            xs, ys, labels = [], [], []
            for j, g in enumerate(groups):
                c = scs.get((t, g))
                if not c:
                    continue
                v = c.median()
                xs.append(j + (i - (len(tools) - 1) / 2) * width)
                ys.append(v if v else 0)
                labels.append("FAIL" if v is None else fmt(v))
            bars = ax.bar(xs, [y if y > 0 else 1e-3 for y in ys], width,
                          label=SYNC_NAMES.get(t, TOOL_NOTE.get(t, t)) if t.endswith("-tuned") else TOOL_NOTE.get(t, t),
                          color=colors.get(t))
            for b, lab in zip(bars, labels):
                ax.annotate(lab, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=6, rotation=90, xytext=(0, 2), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_ylabel("seconds (log scale, median; lower is better)")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g.replace("_", "\n") for g in groups], fontsize=8)
        name = "s3sim (S3-like model)" if sv == "sim" else f"moto + {meta.get('delay_ms', '?')} ms relay"
        ax.set_title(f"s3mirrorfs vs peers on {name}; {meta.get('nproc', '?')} cores, "
                     f"{meta.get('date', '')[:10]}")
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        ax.grid(axis="y", which="both", alpha=0.3)
        if pts:
            ax2 = axes[k][1]
            if k > 0:
                ax2.axis("off")
                continue
            styles = {"scale_list": ("server floor (list)", "#7f7f7f"),
                      "scale_prefetch": ("prefetch", "#d62728"),
                      "scale_nochange": ("prefetch, no change", "#ff9896"),
                      "scale_find_cold": ("find, cold mount", "#1f77b4"),
                      "scale_find_warm": ("find, listing known", "#aec7e8")}
            for nm, (label, color) in styles.items():
                if nm not in pts:
                    continue
                ns = sorted(n for n in pts[nm] if pts[nm][n].median())
                ax2.plot(ns, [pts[nm][n].median() for n in ns], "o-", label=label, color=color)
            ax2.set_xscale("log")
            ax2.set_yscale("log")
            ax2.set_xlabel("keys")
            ax2.set_ylabel("seconds")
            ax2.set_title("s3mirrorfs at scale")
            ax2.legend(fontsize=8)
            ax2.grid(which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(results, "comparison.png"), dpi=100)


def plot_pscale(results, meta, cs, rows):
    ps = pscale_cells(cs)
    if not ps:
        return
    with open(os.path.join(results, "prefetch-scale.tsv"), "w") as f:
        cols = list(rows[0].keys())
        f.write("\t".join(cols) + "\n")
        for r in rows:
            if r["workload"].startswith("pscale_"):
                f.write("\t".join(r.get(c) or "" for c in cols) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 7))
    styles = [("first", "tree", "into an empty mirror", "#d62728", "o-"),
              ("nochange", "tree", "no change, 16 list workers", "#ff9896", "o-"),
              ("serial", "tree", "no change, --list-workers 1", "#1f77b4", "o-"),
              ("first", "flat", "flat dir, empty mirror", "#d62728", "s"),
              ("nochange", "flat", "flat dir, no change, 16", "#ff9896", "s"),
              ("serial", "flat", "flat dir, no change, serial", "#1f77b4", "s"),
              ("invfirst", "tree", "--inventory, empty mirror", "#2ca02c", "^"),
              ("invnochange", "tree", "--inventory, no change", "#98df8a", "^")]
    for run, lay, label, color, mark in styles:
        ns = sorted(n for (r, la, n) in ps if r == run and la == lay and ps[(r, la, n)].median())
        if not ns:
            continue
        ax.plot(ns, [ps[(run, lay, n)].median() for n in ns], mark, label=label, color=color)
        if run in ("nochange", "serial"):
            lst = [(n, ps[(run, lay, n)].med_of("list_s")) for n in ns]
            lst = [(n, v) for n, v in lst if v]
            if lst:
                ax.plot([n for n, _ in lst], [v for _, v in lst], "--" if lay == "tree" else "x",
                        label=f"{label}: listing alone", color=color)
        rss = [(n, ps[(run, lay, n)].med_of("rss_mib")) for n in ns]
        rss = [(n, v) for n, v in rss if v is not None]
        if rss:
            ax2.plot([n for n, _ in rss], [v for _, v in rss], mark, label=label, color=color)
    ns = sorted({n for (_, _, n) in ps})
    if len(ns) >= 2:
        c0 = ps.get(("first", "tree", ns[0]))
        if c0 and c0.median():
            ax.plot(ns, [c0.median() * n / ns[0] for n in ns], ":", color="#7f7f7f",
                    label="linear from the smallest")
    ax2.axhline(150, color="#7f7f7f", linestyle="--", label="target: 150 MiB")
    for a, ylabel, title in ((ax, "seconds", "wall time"), (ax2, "peak RSS, MiB (VmHWM)", "memory")):
        a.set_xscale("log")
        a.set_xlabel("keys")
        a.set_ylabel(ylabel)
        a.set_title(f"prefetch at scale: {title} (s3sim, {meta.get('delay_ms', '?')} ms; "
                    f"{meta.get('nproc', '?')} cores, {meta.get('date', '')[:10]})", fontsize=9)
        a.set_xticks(ns)
        a.set_xticklabels([f"{n:,}" for n in ns])
        a.grid(which="both", alpha=0.3)
        a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    ax.set_yscale("log")
    ax2.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(os.path.join(results, "prefetch-scale.png"), dpi=110)


def section_bounds(lines, title):
    """(start, end) of the section whose heading starts with `title`, or None."""
    for i, line in enumerate(lines):
        if line.startswith(title):
            for j in range(i + 1, len(lines)):
                if lines[j].startswith("## ") or lines[j].startswith("Raw numbers:"):
                    return i, j
            return i, len(lines)
    return None


def splice(src, dst):
    import shutil

    with open(os.path.join(src, "RESULTS.md")) as f:
        theirs = f.read().split("\n")
    b = section_bounds(theirs, PSCALE_TITLE)
    if not b:
        sys.exit(f"report.py: no prefetch-at-scale section in {src}/RESULTS.md")
    section = theirs[b[0]:b[1]]
    path = os.path.join(dst, "RESULTS.md")
    with open(path) as f:
        ours = f.read().split("\n")
    at = section_bounds(ours, PSCALE_TITLE)
    if at:
        ours[at[0]:at[1]] = section
    else:
        end = next((i for i, line in enumerate(ours) if line.startswith("Raw numbers:")), len(ours))
        ours[end:end] = section
    with open(path, "w") as f:
        f.write("\n".join(ours))
    for name in ("prefetch-scale.png", "prefetch-scale.tsv"):
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def add_server(sv, src, dst):
    """Rows of one server from another run: each server's section compares tools within one
    run, so a section can come whole from an earlier run, which it then names."""
    theirs, their_meta = load(src)
    ours, _ = load(dst)
    if any(r.get("server") == sv for r in ours):
        sys.exit(f"report.py: {dst} has rows on {sv} already")
    moved = [r for r in theirs if r.get("server") == sv]
    if not moved:
        sys.exit(f"report.py: no rows on {sv} in {src}")
    with open(os.path.join(dst, "raw.tsv")) as f:
        fields = next(csv.reader(f, delimiter="\t"))
    with open(os.path.join(dst, "raw.tsv"), "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, delimiter="\t", extrasaction="ignore",
                           lineterminator="\n")
        for r in moved:
            w.writerow({k: r.get(k) or "" for k in fields})
    _, our_meta = load(dst)
    with open(os.path.join(dst, "meta.env"), "a") as f:
        # the machine too: a run kept from earlier may have had another one
        machine = ", ".join(their_meta[k] for k in ("cpu", "kernel") if their_meta.get(k))
        f.write(f"from_run_{sv}={their_meta.get('date', '?')}, "
                f"{their_meta.get('s3mirrorfs', 's3mirrorfs ?')}"
                + (f", on {their_meta.get('nproc', '?')} cores of {machine}" if machine else "")
                + "\n")
        # what that server's section says of itself (its version, its media sizes)
        for k in [sv, f"media_{sv}"] + (["s3sim"] if sv == "sim" else []):
            if k in their_meta and k not in our_meta:
                f.write(f"{k}={their_meta[k]}\n")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--splice":
        splice(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--add-server":
        add_server(*sys.argv[2:])
        return
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    results = sys.argv[1]
    rows, meta = load(results)
    global RUNS
    RUNS = int(meta.get("runs", "1") or 1)
    cs = cells(rows)
    write_md(results, rows, meta, cs)
    plot(results, meta, rows, cs)
    plot_pscale(results, meta, cs, rows)
    soak = load_soak(results)
    if soak:
        plot_soak(results, soak)


if __name__ == "__main__":
    main()
