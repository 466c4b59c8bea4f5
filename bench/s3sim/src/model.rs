//! How the server behaves like S3 rather than like a local process: first-byte latency,
//! throughput caps per connection and in all, injected faults, and request counters.

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
}

impl Stats {
    pub fn count(&self, op: Op) {
        let c = match op {
            Op::List => &self.list,
            Op::Head => &self.head,
            Op::Get => &self.get,
            Op::Other => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn json(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{{\"requests\":{{\"list\":{},\"head\":{},\"get\":{},\"other\":{}}},\"bytes_served\":{},\"errors_injected\":{{\"slowdown\":{},\"dropped\":{},\"stalled\":{}}},\"connections\":{}}}\n",
            g(&self.list),
            g(&self.head),
            g(&self.get),
            g(&self.other),
            g(&self.bytes),
            g(&self.slowdown),
            g(&self.dropped),
            g(&self.stalled),
            g(&self.conns)
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
