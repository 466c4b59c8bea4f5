//! Open file handles: the number the kernel holds, and what it opened.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::FsError;

/// Handles by number; numbers are never reused while the table lives.
pub struct Handles<T> {
    open: Mutex<HashMap<u64, Arc<T>>>,
    next: AtomicU64,
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Handles {
            open: Mutex::default(),
            next: AtomicU64::new(1),
        }
    }
}

impl<T> Handles<T> {
    /// Keeps `file` open under a new handle number.
    pub fn insert(&self, file: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(fh, Arc::new(file));
        fh
    }

    /// What `fh` opened; EBADF for a handle not open.
    pub fn get(&self, fh: u64) -> Result<Arc<T>, FsError> {
        let open = self.open.lock();
        open.get(&fh).cloned().ok_or_else(FsError::bad_handle)
    }

    /// Closes `fh` and gives what it opened, which lives on while a read still holds it.
    pub fn remove(&self, fh: u64) -> Option<Arc<T>> {
        self.open.lock().remove(&fh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_serves_until_released_and_is_never_reused() {
        let handles = Handles::default();
        let a = handles.insert("a");
        let b = handles.insert("b");
        assert_ne!(a, b);
        assert_eq!(*handles.get(a).unwrap().as_ref(), "a");
        handles.remove(a);
        assert_eq!(handles.get(a).unwrap_err().errno(), libc::EBADF);
        assert!(![a, b].contains(&handles.insert("c")));
        assert_eq!(*handles.get(b).unwrap().as_ref(), "b");
    }
}
