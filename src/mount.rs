//! `s3mirrorfs mount`: checks what can be checked, daemonizes unless told not to
//! (reporting mount errors before the parent exits), mounts, tells systemd it is
//! ready, serves until unmounted or signalled, and unmounts on the way out.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::fetch::{FetchConfig, Fetcher};
use crate::fs::{Fs, FsConfig};
use crate::fuse::{MountConfig, Mounted};
use crate::mirror::identity::Source;
use crate::mirror::{Mirror, MirrorError};
use crate::s3::{S3Options, S3Store};
use crate::store::{Escaped, ObjectStore, StoreError};
use crate::sys;

/// Everything the mount command needs.
#[derive(Clone, Debug)]
pub struct MountOptions {
    pub bucket: String,
    /// "" or ending in `/`.
    pub prefix: String,
    pub mountpoint: PathBuf,
    pub mirror_dir: PathBuf,
    pub s3: S3Options,
    /// Accept another endpoint or bucket owner than the mirror records.
    pub allow_new_source: bool,
    pub metadata_ttl: Duration,
    pub allow_other: bool,
    pub foreground: bool,
    /// Owner shown for files and directories; `None` is the user the daemon runs as.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The user to run as once mounted, when started as root (name or uid);
    /// `None` is the owner of the mirror directory.
    pub setuid: Option<String>,
}

/// Why a mount did not start or ended.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mountpoint {} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("mountpoint {0} is a dead mount; run `fusermount3 -u {0}` first", .path.display())]
    DeadMount { path: PathBuf },
    #[error("mountpoint {} is busy: something is already mounted there", .path.display())]
    Busy { path: PathBuf },
    #[error("mountpoint {}: {source}", .path.display())]
    Mountpoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("s3://{bucket}/{}: {source}", Escaped(.prefix))]
    Store {
        bucket: String,
        prefix: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot mount at {}: {source}", .path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The daemon, its unmount watchdog or its runtime could not be started.
    #[error("cannot start the {what}: {source}")]
    Start {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the daemon exited before mounting")]
    DaemonExited,
    #[error("--setuid {spec}: {source}")]
    User {
        spec: String,
        #[source]
        source: io::Error,
    },
    #[error("--setuid needs the mount to be started as root")]
    SetuidNotRoot,
    #[error("cannot switch to {user}: {source}")]
    Switch {
        user: crate::mirror::UserName,
        #[source]
        source: io::Error,
    },
    /// What the daemon (another process) reported before it exited, and whether
    /// the mount was refused (`is_refusal`).
    #[error("{message}")]
    Daemon { message: String, refused: bool },
}

/// Marks a daemon's report of a refusal, so the parent can tell.
const REFUSED: &str = "refused:";

/// The allocator's arenas the daemon uses. Its many pool threads (FUSE, the
/// runtime's, those waiting on S3) would each get one, and memory freed into
/// one is not reused by the others: a long-running mount would hold several
/// copies of its peak.
pub const MALLOC_ARENAS: u32 = 2;
/// Blocks the allocator maps on their own (FUSE buffers, big listings and
/// tables): given back to the system as soon as they are freed.
pub const MALLOC_MMAP_FROM: usize = 1 << 20;

impl MountError {
    /// Whether the mount was refused before it could go on: a mirror of another
    /// source (bucket, endpoint or owner), a mirror directory of another user
    /// than the one the daemon runs as, or a user that cannot be run as.
    pub fn is_refusal(&self) -> bool {
        match self {
            MountError::Mirror(e) => e.is_other_source() || e.is_not_owner(),
            MountError::Daemon { refused, .. } => *refused,
            MountError::User { .. } | MountError::SetuidNotRoot => true,
            _ => false,
        }
    }

    /// How the daemon reports this error to its parent.
    fn report(&self) -> String {
        match self.is_refusal() {
            true => format!("{REFUSED}{self}"),
            false => self.to_string(),
        }
    }

    /// The error a daemon reported with `report`.
    fn reported(report: &str) -> MountError {
        match report.strip_prefix(REFUSED) {
            Some(message) => MountError::Daemon {
                message: message.to_string(),
                refused: true,
            },
            None => MountError::Daemon {
                message: report.to_string(),
                refused: false,
            },
        }
    }

    fn start(what: &'static str) -> impl FnOnce(io::Error) -> MountError {
        move |source| MountError::Start { what, source }
    }
}

/// Mounts and serves; with `foreground == false` returns in the parent as soon as
/// the daemon has mounted (or failed to).
pub fn run(options: MountOptions) -> Result<(), MountError> {
    check_mountpoint(&options.mountpoint)?;
    let run_as = run_as(&options)?;
    if options.foreground {
        return serve(&options, run_as.as_ref(), None);
    }
    let (mut from_child, to_parent) = sys::pipe().map_err(MountError::start("daemon"))?;
    match sys::fork().map_err(MountError::start("daemon"))? {
        Some(_) => {
            drop(to_parent);
            let mut message = String::new();
            let _ = from_child.read_to_string(&mut message);
            match message.as_str() {
                "ready" => Ok(()),
                "" => Err(MountError::DaemonExited),
                report => Err(MountError::reported(report)),
            }
        }
        None => {
            drop(from_child);
            let _ = sys::setsid();
            let mut pipe = Some(to_parent);
            let code = match serve(&options, run_as.as_ref(), Some(&mut pipe)) {
                Ok(()) => 0,
                Err(e) => {
                    match pipe.as_mut() {
                        Some(pipe) => {
                            let _ = pipe.write_all(e.report().as_bytes());
                        }
                        None => tracing::error!("{e}"),
                    }
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// The user the daemon gives root up for once mounted: `None` when it does not
/// run as root (or is to stay root: the mirror is root's). Started as root, it
/// runs as `--setuid`, else as the owner of the mirror directory (root when
/// the directory does not exist yet, which root then creates, as before). A
/// mirror directory of another user than that one is refused here, before
/// anything is mounted or written.
fn run_as(options: &MountOptions) -> Result<Option<sys::User>, MountError> {
    let lookup = |spec: &str| {
        sys::lookup_user(spec).map_err(|source| MountError::User {
            spec: spec.to_string(),
            source,
        })
    };
    let owner = match crate::sys::beneath::Dir::open_root(&options.mirror_dir) {
        Ok(dir) => Some(dir.owner().map_err(|err| MirrorError::Io {
            path: options.mirror_dir.clone(),
            err,
        })?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(err) => {
            return Err(MirrorError::NotWritable {
                path: options.mirror_dir.clone(),
                err,
            }
            .into());
        }
    };
    if sys::euid() != 0 {
        if let Some(spec) = &options.setuid
            && lookup(spec)?.uid != sys::euid()
        {
            return Err(MountError::SetuidNotRoot);
        }
        return Ok(None);
    }
    let user = match (&options.setuid, owner) {
        (Some(spec), _) => lookup(spec)?,
        (None, Some(owner)) => sys::user_by_uid(owner).ok().flatten().unwrap_or(sys::User {
            name: None,
            uid: owner,
            gid: owner,
        }),
        (None, None) => return Ok(None),
    };
    if let Some(owner) = owner
        && owner != user.uid
    {
        return Err(MirrorError::NotOwner {
            path: options.mirror_dir.clone(),
            owner: crate::mirror::UserName(owner),
            user: crate::mirror::UserName(user.uid),
        }
        .into());
    }
    Ok((user.uid != 0).then_some(user))
}

/// A missing, non-directory, busy or dead mountpoint is refused with a clear message.
fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    let path = path.to_path_buf();
    let failed = |source| MountError::Mountpoint {
        path: path.clone(),
        source,
    };
    match fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(MountError::NotADirectory { path }),
        Err(e) if sys::is_not_connected(&e) => return Err(MountError::DeadMount { path }),
        Err(e) => return Err(failed(e)),
    }
    let canonical = fs::canonicalize(&path).map_err(failed)?;
    if is_mount_point(&canonical) {
        return Err(MountError::Busy { path });
    }
    Ok(())
}

/// Whether something is mounted exactly at `path`, from /proc/self/mountinfo.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|field| unescape_mountinfo(field) == wanted)
}

fn unescape_mountinfo(field: &str) -> String {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(n) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(n);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(
    options: &MountOptions,
    run_as: Option<&sys::User>,
    ready: Option<&mut Option<File>>,
) -> Result<(), MountError> {
    // Still single-threaded here: the watchdog is forked and the signals blocked
    // before any thread exists, so every thread inherits the mask.
    let mut lifeline = sys::unmount_watchdog(&options.mountpoint)
        .map_err(MountError::start("unmount watchdog"))?;
    sys::block_signals(&sys::STOP_SIGNALS);
    // Before any thread exists, so every thread shares these few arenas.
    sys::tune_allocator(MALLOC_ARENAS, MALLOC_MMAP_FROM);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(MountError::start("async runtime"))?;
    // The mirror is opened, checked and (first time) created as the user the
    // daemon will run as; only the mount itself is made as root.
    let switch = |user: &sys::User| {
        let user_name = crate::mirror::UserName(user.uid);
        move |source| MountError::Switch {
            user: user_name,
            source,
        }
    };
    if let Some(user) = run_as {
        sys::act_as(user).map_err(switch(user))?;
    }
    let mirror = Arc::new(Mirror::open(&options.mirror_dir, &options.bucket)?);
    let store = connect(options, &runtime, &mirror)?;
    let fs = filesystem(
        options,
        run_as,
        store,
        Arc::clone(&mirror),
        runtime.handle().clone(),
    );
    if let Some(user) = run_as {
        sys::act_as_root().map_err(switch(user))?;
    }
    let config = MountConfig {
        fs_name: format!("s3mirrorfs:{}/{}", options.bucket, options.prefix),
        allow_other: options.allow_other,
        threads: 16,
        clone_fd: run_as.is_none(),
    };
    let mount_error = |source| MountError::Mount {
        path: options.mountpoint.clone(),
        source,
    };
    let mounted = Mounted::mount(fs, &options.mountpoint, &config).map_err(mount_error)?;
    // From now on, the daemon dying in any way unmounts: no dead mountpoint is left.
    // The watchdog stays root, so it can unmount what root mounted.
    lifeline.arm();
    if let Some(user) = run_as {
        sys::drop_privileges(user).map_err(switch(user))?;
        tracing::info!(uid = user.uid, gid = user.gid, "gave up root");
    }
    unmount_on_signal(options.mountpoint.clone(), run_as.is_some());
    tracing::info!(
        "mounted s3://{}/{} at {} (mirror {})",
        options.bucket,
        Escaped(&options.prefix),
        options.mountpoint.display(),
        mirror.root().display()
    );
    announce_ready(ready, &mirror);
    let result = mounted.run();
    sys::notify_systemd("STOPPING=1");
    tracing::info!("unmounted {}", options.mountpoint.display());
    result.map_err(mount_error)
}

/// The store, after one listing: a mirror of another source (checked before any
/// request), a bad bucket, endpoint or credentials fail the mount, unless S3 is
/// only unreachable and the mirror (used before for this bucket) can serve what it
/// holds. The client expects the bucket owner the mount names or the mirror records.
fn connect(
    options: &MountOptions,
    runtime: &tokio::runtime::Runtime,
    mirror: &Mirror,
) -> Result<Arc<dyn ObjectStore>, MountError> {
    let requested = options.s3.expected_bucket_owner.clone();
    let s3 = S3Options {
        expected_bucket_owner: mirror.expected_owner(requested.as_deref()),
        ..options.s3.clone()
    };
    let s3 = runtime.block_on(S3Store::connect(&options.bucket, &s3));
    let source = Source {
        endpoint: s3.source_endpoint().to_string(),
        owner: requested,
    };
    mirror.check_source(&source, options.allow_new_source)?;
    let store: Arc<dyn ObjectStore> = Arc::new(s3);
    match runtime.block_on(store.list_page(&options.prefix, true, None)) {
        Ok(_) => mirror.claim()?,
        Err(e) if e.is_transient() && mirror.is_claimed() => {
            tracing::warn!("S3 is unreachable ({e}); serving what the mirror holds");
        }
        Err(source) => {
            return Err(MountError::Store {
                bucket: options.bucket.clone(),
                prefix: options.prefix.clone(),
                source,
            });
        }
    }
    Ok(store)
}

/// The filesystem over `store` and `mirror`, with one download budget.
fn filesystem(
    options: &MountOptions,
    run_as: Option<&sys::User>,
    store: Arc<dyn ObjectStore>,
    mirror: Arc<Mirror>,
    rt: tokio::runtime::Handle,
) -> Arc<Fs> {
    let fetcher = Fetcher::new(
        Arc::clone(&store),
        mirror,
        FetchConfig {
            max_attempts: options.s3.max_attempts,
            stall_timeout: options.s3.stall_timeout,
            ..FetchConfig::default()
        },
    );
    let (uid, gid) = sys::uid_gid();
    let config = FsConfig {
        prefix: options.prefix.clone(),
        metadata_ttl: options.metadata_ttl,
        uid: options.uid.or(run_as.map(|u| u.uid)).unwrap_or(uid),
        gid: options.gid.or(run_as.map(|u| u.gid)).unwrap_or(gid),
    };
    Arc::new(Fs::new(store, fetcher, config, rt))
}

/// Unmounts (lazily) when one of the stop signals arrives; `Mounted::run` then
/// returns. A daemon that gave up root cannot unmount what root mounted: it
/// exits, and its watchdog, still root, unmounts.
fn unmount_on_signal(mountpoint: PathBuf, dropped_root: bool) {
    std::thread::spawn(move || {
        let signal = sys::wait_signal(&sys::STOP_SIGNALS);
        tracing::info!(signal, "unmounting");
        if dropped_root {
            sys::notify_systemd("STOPPING=1");
            tracing::info!("unmounted {} (by the watchdog)", mountpoint.display());
            std::process::exit(0);
        }
        if let Err(e) = sys::unmount_lazy(&mountpoint) {
            tracing::error!("cannot unmount {}: {e}", mountpoint.display());
        }
    });
}

/// Tells whoever waits that the mount is up: the parent of a daemon (whose
/// standard streams then go to the mirror's mount.log) and systemd.
fn announce_ready(ready: Option<&mut Option<File>>, mirror: &Mirror) {
    if let Some(mut pipe) = ready.and_then(|p| p.take()) {
        let log = mirror.open_state_log("mount.log").ok();
        let _ = sys::redirect_stdio(log.as_ref());
        let _ = pipe.write_all(b"ready");
    }
    sys::notify_systemd("READY=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_unescape() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert!(is_mount_point(Path::new("/")));
        assert!(!is_mount_point(Path::new("/definitely/not/mounted")));
    }
}
