//! The buffers a read's bytes pass through on their way to the kernel: a few,
//! lent out and given back. A buffer per read would be allocated (and zeroed)
//! for every 256 KiB the kernel asks for, and when a part of a download lands,
//! every reader waiting on it wakes at once: the daemon's memory would peak at
//! a buffer per waiting reader, and the allocator would keep much of it. Lent
//! buffers bound that to `most` buffers, reused without zeroing them again; a
//! read waits for one only while the others are being copied out, which takes
//! microseconds once the bytes are in the page cache.

use std::io;
use std::ops::Deref;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

/// Buffers lent to reads, at most `most` at once.
pub struct Buffers {
    pool: Mutex<Pool>,
    returned: Condvar,
    most: usize,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Vec<u8>>,
    lent: usize,
}

/// The bytes of one read, in a lent buffer (given back when dropped) or in one
/// of their own.
pub struct Bytes {
    buf: Vec<u8>,
    len: usize,
    home: Option<Arc<Buffers>>,
}

impl Buffers {
    pub fn new(most: usize) -> Arc<Buffers> {
        Arc::new(Buffers {
            pool: Mutex::new(Pool::default()),
            returned: Condvar::new(),
            most: most.max(1),
        })
    }

    /// Fills a lent buffer of `size` bytes with `read`, which returns how many it
    /// put there; waits while `most` buffers are lent.
    pub fn fill(
        self: &Arc<Self>,
        size: usize,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<Bytes> {
        let mut buf = self.lend();
        if buf.len() < size {
            buf.resize(size, 0);
        }
        let mut bytes = Bytes {
            buf,
            len: 0,
            home: Some(Arc::clone(self)),
        };
        bytes.len = read(&mut bytes.buf[..size])?.min(size);
        Ok(bytes)
    }

    fn lend(&self) -> Vec<u8> {
        let mut pool = self.pool.lock();
        while pool.lent >= self.most {
            self.returned.wait(&mut pool);
        }
        pool.lent += 1;
        pool.idle.pop().unwrap_or_default()
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut pool = self.pool.lock();
        pool.lent -= 1;
        pool.idle.push(buf);
        drop(pool);
        self.returned.notify_one();
    }

    /// Buffers lent now, and kept idle.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let pool = self.pool.lock();
        (pool.lent, pool.idle.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(buf: Vec<u8>) -> Bytes {
        Bytes {
            len: buf.len(),
            buf,
            home: None,
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bytes").field("len", &self.len).finish()
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_buffer_holds_what_was_read_and_is_reused_without_old_bytes_showing() {
        let buffers = Buffers::new(2);
        let first = buffers
            .fill(8, |buf| {
                buf.copy_from_slice(b"abcdefgh");
                Ok(8)
            })
            .unwrap();
        assert_eq!(&*first, b"abcdefgh");
        let addr = first.buf.as_ptr();
        drop(first);
        assert_eq!(buffers.counts(), (0, 1));
        // A shorter read into the same buffer shows its own bytes only.
        let second = buffers
            .fill(8, |buf| {
                buf[..3].copy_from_slice(b"xyz");
                Ok(3)
            })
            .unwrap();
        assert_eq!(&*second, b"xyz");
        assert_eq!(second.buf.as_ptr(), addr, "the buffer was reused");
        // A larger read grows it.
        drop(second);
        let third = buffers.fill(100, |buf| Ok(buf.len())).unwrap();
        assert_eq!(third.len(), 100);
    }

    #[test]
    fn a_failed_read_gives_its_buffer_back() {
        let buffers = Buffers::new(1);
        let err = buffers
            .fill(4, |_| Err(io::Error::other("disk")))
            .unwrap_err();
        assert_eq!(err.to_string(), "disk");
        assert_eq!(buffers.counts(), (0, 1));
        // The one buffer is free for the next read.
        assert_eq!(buffers.fill(4, |_| Ok(4)).unwrap().len(), 4);
    }

    #[test]
    fn reads_past_the_limit_wait_for_a_buffer_to_come_back() {
        let buffers = Buffers::new(2);
        let a = buffers.fill(4, |_| Ok(4)).unwrap();
        let b = buffers.fill(4, |_| Ok(4)).unwrap();
        let (sent, got) = mpsc::channel();
        let waiter = {
            let buffers = Arc::clone(&buffers);
            std::thread::spawn(move || {
                let c = buffers.fill(4, |buf| {
                    buf.copy_from_slice(b"late");
                    Ok(4)
                });
                sent.send(c.map(|c| c.to_vec()).unwrap()).unwrap();
            })
        };
        assert!(
            got.recv_timeout(Duration::from_millis(100)).is_err(),
            "a third read waits while two buffers are lent"
        );
        drop(a);
        assert_eq!(got.recv_timeout(Duration::from_secs(10)).unwrap(), b"late");
        waiter.join().unwrap();
        drop(b);
        assert_eq!(buffers.counts(), (0, 2), "never more than two buffers");
    }

    #[test]
    fn bytes_of_their_own_need_no_buffer() {
        let bytes = Bytes::from(vec![1, 2, 3]);
        assert_eq!(&*bytes, &[1, 2, 3]);
    }
}
