//! s3sim: a synthetic S3 server for the benchmark. It serves buckets of generated keys
//! (millions cost no memory), answers like S3 with a configurable first-byte latency and
//! throughput caps, injects faults on demand and counts what it served. It is a load
//! generator and performance model, not a reference for S3 semantics: the product's
//! tests run against moto.

mod data;
mod enc;
mod http;
mod inventory;
mod list;
mod model;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::data::{Bucket, KeySet, odd_objects};
use crate::http::Sim;
use crate::model::Model;

const USAGE: &str = "\
usage: s3sim --listen ADDR [OPTIONS] --bucket NAME [BUCKET OPTIONS] [--bucket NAME ...]

A synthetic S3 server: path-style http://ADDR/BUCKET/KEY (and virtual-host style when the
Host header starts with a bucket name), no TLS, any credentials accepted.

Data set (each option applies to the --bucket before it):
  --set COUNT[@FIRST]:SIZE:FANOUT:TEMPLATE
        COUNT keys numbered FIRST.. (default 0). TEMPLATE holds {i} (the number),
        {d} (number / FANOUT, the directory) and {j} (number % FANOUT), each with an
        optional zero-padded width: {i:7}. FANOUT 0 = no directories. SIZE: bytes with an
        optional K, M or G (binary), or `keyline` (the key and a newline). Contents are
        generated from the key; the ETag is their MD5. Keys must come out in S3 order
        (zero-pad wide enough); sets of one bucket must not interleave.
  --odd-keys PREFIX
        add a few keys with spaces, unicode and characters that need URL encoding
  --inventory-bucket INV
        also serve bucket INV holding an S3 Inventory report (CSV) of this bucket:
        INV/BUCKET/CONFIG/DATE/manifest.json, manifest.checksum, INV/BUCKET/CONFIG/data/*.csv.gz
  --inventory-config ID     default daily
  --inventory-date YYYY-MM-DDTHH-MMZ    default 2026-12-01T00-00Z
  --inventory-rows N        rows per data file, default 250000

Examples:
  --bucket mem --set 1000000:1K:1000:tree/d{d:4}/img-{i:7}.jpg
  --bucket bigdir --set 1000000:0:0:big/img-{i:7}.jpg
  --bucket bench --set 1:256M:0:large.bin --set 2000:64K:100:small/p{d:2}/obj{j:3}.bin
  --bucket media --set 8:256M:0:large/part-{i:1}.bin --set 1:1G:0:huge.bin \\
                 --set 500:4M:0:photos/img-{i:4}.jpg --odd-keys odd/

Performance model (0 = off):
  --latency-ms N       first-byte latency of every request, default 20
  --conn-mibps N       throughput cap per connection, default 90
  --total-mibps N      throughput cap across all connections, default 1024
  --slowdown FRACTION --slowdown-for SECONDS
                       answer FRACTION of the requests with 503 SlowDown for the first SECONDS
  --threads N          tokio worker threads (default: max(4, 2 x CPUs))
  --region R           the bucket region it reports, default us-east-1

Control (plain HTTP on the same address, never delayed or counted):
  GET  /__sim/stats                      JSON: requests by kind (in all and by bucket served),
                                         bytes served, errors injected
  POST /__sim/stats/reset
  POST /__sim/slowdown?fraction=F&seconds=S
  POST /__sim/stall?seconds=N            hold every request arriving in the next N seconds
  POST /__sim/down                       close connections without an answer (but to /__sim/),
                                         cut bodies being sent
  POST /__sim/up

Operations: ListObjectsV2 and ListObjects (V1), HeadObject, GetObject (Range, If-Match,
If-None-Match), HeadBucket, GetBucketLocation, ListBuckets; anything else is 501
NotImplemented.";

struct Args {
    listen: SocketAddr,
    buckets: Vec<Bucket>,
    latency_ms: u64,
    conn_mibps: f64,
    total_mibps: f64,
    slowdown: f64,
    slowdown_for: f64,
    threads: usize,
    region: String,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut listen = None;
    let mut buckets: Vec<Bucket> = Vec::new();
    let mut latency_ms = 20;
    let mut conn_mibps = 90.0;
    let mut total_mibps = 1024.0;
    let mut slowdown = 0.0;
    let mut slowdown_for = 0.0;
    let mut threads = (2 * cpus).max(4);
    let mut region = "us-east-1".to_string();
    let mut inv: Option<(String, inventory::Options)> = None;
    let mut it = args.iter();
    let finish_inventory = |buckets: &mut Vec<Bucket>,
                            inv: &mut Option<(String, inventory::Options)>|
     -> Result<(), String> {
        if let Some((name, opts)) = inv.take() {
            let src = buckets.last_mut().expect("an inventory follows a bucket");
            src.seal()?;
            let t = Instant::now();
            let objs = inventory::report(src, &name, &opts)?;
            eprintln!(
                "s3sim: inventory of {} ({} keys) in bucket {name}: {} objects, {:.1} s",
                src.name,
                src.len(),
                objs.len(),
                t.elapsed().as_secs_f64()
            );
            let mut b = Bucket::new(&name);
            b.add_stored(objs);
            buckets.push(b);
        }
        Ok(())
    };
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| *v >= 0.0)
                .ok_or_else(|| format!("{flag} {value}: not a number"))
        };
        let in_bucket = |buckets: &mut Vec<Bucket>| -> Result<(), String> {
            if buckets.is_empty() {
                return Err(format!("{flag} comes after a --bucket"));
            }
            Ok(())
        };
        match flag.as_str() {
            "--listen" => {
                listen = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--listen {value}: {e}"))?,
                )
            }
            "--latency-ms" => latency_ms = num()? as u64,
            "--conn-mibps" => conn_mibps = num()?,
            "--total-mibps" => total_mibps = num()?,
            "--slowdown" => slowdown = num()?.min(1.0),
            "--slowdown-for" => slowdown_for = num()?,
            "--threads" => threads = (num()? as usize).max(1),
            "--region" => region = value.clone(),
            "--bucket" => {
                finish_inventory(&mut buckets, &mut inv)?;
                if buckets.iter().any(|b| b.name == *value) {
                    return Err(format!("bucket {value} given twice"));
                }
                buckets.push(Bucket::new(value));
            }
            "--set" => {
                in_bucket(&mut buckets)?;
                buckets
                    .last_mut()
                    .expect("checked")
                    .add_set(KeySet::parse(value)?);
            }
            "--odd-keys" => {
                in_bucket(&mut buckets)?;
                buckets
                    .last_mut()
                    .expect("checked")
                    .add_stored(odd_objects(value));
            }
            "--inventory-bucket" => {
                in_bucket(&mut buckets)?;
                inv = Some((
                    value.clone(),
                    inventory::Options {
                        config_id: "daily".into(),
                        date: "2026-12-01T00-00Z".into(),
                        rows_per_file: 250_000,
                        threads: cpus,
                    },
                ));
            }
            "--inventory-config" | "--inventory-date" | "--inventory-rows" => {
                let Some((_, o)) = inv.as_mut() else {
                    return Err(format!("{flag} comes after --inventory-bucket"));
                };
                match flag.as_str() {
                    "--inventory-config" => o.config_id = value.clone(),
                    "--inventory-date" => o.date = value.clone(),
                    _ => o.rows_per_file = num()? as u64,
                }
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    finish_inventory(&mut buckets, &mut inv)?;
    for b in &mut buckets {
        b.seal()?;
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        buckets,
        latency_ms,
        conn_mibps,
        total_mibps,
        slowdown,
        slowdown_for,
        threads,
        region,
    })
}

/// Hashes the objects whose MD5 is memoized, on every CPU, so that the first listing or
/// GET of a large object does not wait for it.
fn warm_md5s(buckets: &[Arc<Bucket>]) {
    let work: Vec<(Arc<Bucket>, u64)> = buckets
        .iter()
        .flat_map(|b| b.unhashed().into_iter().map(move |p| (b.clone(), p)))
        .collect();
    if work.is_empty() {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::spawn(move || {
        let t = Instant::now();
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..cpus {
                s.spawn(|| {
                    while let Some((b, pos)) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                        b.md5(*pos);
                    }
                });
            }
        });
        eprintln!(
            "s3sim: hashed {} large objects in {:.1} s",
            work.len(),
            t.elapsed().as_secs_f64()
        );
    });
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = Instant::now();
    let a = match parse_args(&args) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("s3sim: {e}\n(see s3sim --help)");
            return ExitCode::from(2);
        }
    };
    for b in &a.buckets {
        eprintln!("s3sim: bucket {} holds {} keys", b.name, b.len());
    }
    let model = Model::new(a.latency_ms, a.conn_mibps, a.total_mibps);
    model.set_slowdown(a.slowdown, a.slowdown_for);
    let sim = Arc::new(Sim::new(a.buckets, model, a.region));
    warm_md5s(&sim.buckets);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("s3sim: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(a.listen, sim, t))
}

async fn serve(addr: SocketAddr, sim: Arc<Sim>, t: Instant) -> ExitCode {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("s3sim: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "s3sim: listening on http://{addr} (ready in {:.1} s; latency {:?})",
        t.elapsed().as_secs_f64(),
        sim.model.latency
    );
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        };
        let (stream, _) = match accepted {
            Ok(c) => c,
            Err(e) => {
                eprintln!("s3sim: accept: {e}");
                continue;
            }
        };
        sim.model.stats.conns.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let sim = sim.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| http::handle(req, sim.clone()));
            // errors here are clients that went away, or a server made to go down
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
