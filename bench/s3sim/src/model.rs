//! How the server behaves like S3 rather than like a local process: first-byte latency,
//! throughput caps per connection and in all, injected faults, and request counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What a request is, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    Head,
    Get,
    Other,
}

#[derive(Default)]
pub struct Stats {
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub get: AtomicU64,
    pub other: AtomicU64,
    pub bytes: AtomicU64,
    pub slowdown: AtomicU64,
    pub dropped: AtomicU64,
    pub stalled: AtomicU64,
    pub conns: AtomicU64,
    /// Requests by served bucket: list, head, get, other.
    by_bucket: Mutex<BTreeMap<String, [u64; 4]>>,
}

impl Stats {
    /// Counts one request; `bucket` is the bucket it names when the server serves it.
    pub fn count(&self, op: Op, bucket: Option<&str>) {
        let (c, i) = match op {
            Op::List => (&self.list, 0),
            Op::Head => (&self.head, 1),
            Op::Get => (&self.get, 2),
            Op::Other => (&self.other, 3),
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = bucket {
            let mut by = self.by_bucket.lock().unwrap();
            match by.get_mut(b) {
                Some(n) => n[i] += 1,
                None => {
                    let mut n = [0; 4];
                    n[i] = 1;
                    by.insert(b.to_string(), n);
                }
            }
        }
    }

    pub fn json(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let by: Vec<String> = self
            .by_bucket
            .lock()
            .unwrap()
            .iter()
            .map(|(b, n)| {
                let b = b.replace('\\', "\\\\").replace('"', "\\\"");
                format!(
                    "\"{b}\":{{\"list\":{},\"head\":{},\"get\":{},\"other\":{}}}",
                    n[0], n[1], n[2], n[3]
                )
            })
            .collect();
        format!(
            "{{\"requests\":{{\"list\":{},\"head\":{},\"get\":{},\"other\":{}}},\"bytes_served\":{},\"errors_injected\":{{\"slowdown\":{},\"dropped\":{},\"stalled\":{}}},\"connections\":{},\"by_bucket\":{{{}}}}}\n",
            g(&self.list),
            g(&self.head),
            g(&self.get),
            g(&self.other),
            g(&self.bytes),
            g(&self.slowdown),
            g(&self.dropped),
            g(&self.stalled),
            g(&self.conns),
            by.join(",")
        )
    }

    pub fn reset(&self) {
        for a in [
            &self.list,
            &self.head,
            &self.get,
            &self.other,
            &self.bytes,
            &self.slowdown,
            &self.dropped,
            &self.stalled,
            &self.conns,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        self.by_bucket.lock().unwrap().clear();
    }
}

/// Bytes per second, or unlimited.
fn rate(mibps: f64) -> Option<f64> {
    (mibps > 0.0).then_some(mibps * 1_048_576.0)
}

pub struct Model {
    pub latency: Duration,
    conn_rate: Option<f64>,
    total_rate: Option<f64>,
    /// When the aggregate cap lets the next byte go (a virtual clock, never behind now).
    total_next: Mutex<Instant>,
    slowdown: Mutex<Option<(f64, Instant)>>,
    stall_until: Mutex<Option<Instant>>,
    down: AtomicBool,
    rng: AtomicU64,
    pub stats: Stats,
}

impl Model {
    pub fn new(latency_ms: u64, conn_mibps: f64, total_mibps: f64) -> Self {
        Model {
            latency: Duration::from_millis(latency_ms),
            conn_rate: rate(conn_mibps),
            total_rate: rate(total_mibps),
            total_next: Mutex::new(Instant::now()),
            slowdown: Mutex::new(None),
            stall_until: Mutex::new(None),
            down: AtomicBool::new(false),
            rng: AtomicU64::new(0x5eed),
            stats: Stats::default(),
        }
    }

    /// Answer `fraction` of the requests with 503 SlowDown for the next `secs` seconds.
    pub fn set_slowdown(&self, fraction: f64, secs: f64) {
        *self.slowdown.lock().unwrap() = (fraction > 0.0 && secs > 0.0).then(|| {
            (
                fraction.min(1.0),
                Instant::now() + Duration::from_secs_f64(secs),
            )
        });
    }

    pub fn slowdown_now(&self) -> bool {
        let Some((fraction, until)) = *self.slowdown.lock().unwrap() else {
            return false;
        };
        if Instant::now() >= until {
            return false;
        }
        let x = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        let mut z = x ^ (x >> 31);
        z = z.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z ^= z >> 29;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < fraction
    }

    /// Hold every request that arrives in the next `secs` seconds until then.
    pub fn set_stall(&self, secs: f64) {
        *self.stall_until.lock().unwrap() =
            (secs > 0.0).then(|| Instant::now() + Duration::from_secs_f64(secs));
    }

    pub fn stall_until(&self) -> Option<Instant> {
        let until = (*self.stall_until.lock().unwrap())?;
        (until > Instant::now()).then_some(until)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Waits until `n` more bytes of a response that started at `start` and has sent
    /// `sent` bytes may go, under both caps.
    pub async fn pace(&self, start: Instant, sent: u64, n: u64) {
        let mut due = Instant::now();
        if let Some(r) = self.conn_rate {
            due = due.max(start + Duration::from_secs_f64((sent + n) as f64 / r));
        }
        if let Some(r) = self.total_rate {
            let mut next = self.total_next.lock().unwrap();
            let t = (*next).max(Instant::now()) + Duration::from_secs_f64(n as f64 / r);
            *next = t;
            due = due.max(t);
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_hold_a_transfer_to_its_rate() {
        let m = Model::new(0, 100.0, 0.0);
        let start = Instant::now();
        let mut sent = 0;
        while sent < 10 << 20 {
            m.pace(start, sent, 1 << 20).await;
            sent += 1 << 20;
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((0.095..0.2).contains(&secs), "{secs}");
    }

    #[test]
    fn slowdown_hits_about_its_fraction() {
        let m = Model::new(0, 0.0, 0.0);
        assert!(!m.slowdown_now());
        m.set_slowdown(0.25, 60.0);
        let hits = (0..10_000).filter(|_| m.slowdown_now()).count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
        m.set_slowdown(0.0, 60.0);
        assert!(!m.slowdown_now());
    }
}
