//! io::backend: which storage backend the disk writer runs on (`io_backend = auto|uring|std`),
//! chosen once at start. `auto` probes io_uring (on the writer thread, which writes and fsyncs a
//! small file in the data directory) and falls back to std with one log line naming the reason;
//! `uring` refuses to start without it, naming the reason; `std` never probes.
//!
//! Test hook: the environment variable [`PROBE_FAIL_ENV`] (`BRAMBLE_IO_URING_PROBE_FAIL`), read
//! only when the probe runs, makes the probe fail as if the kernel had answered with that errno
//! (`ENOSYS`, `EPERM`, `EACCES`, `EINVAL`, or anything else for an unclassified failure), so the
//! fallback can be exercised on a kernel where io_uring works.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;

use super::{DiskWriter, StdStorage, WriterConfig, WriterError};

/// Set to an errno name to make the io_uring probe fail with it (tests only).
pub const PROBE_FAIL_ENV: &str = "BRAMBLE_IO_URING_PROBE_FAIL";

/// Whether this build has the io_uring backend (64-bit Linux only; see the io-uring entry in
/// Cargo.toml).
pub const URING_BUILT: bool = cfg!(all(target_os = "linux", target_pointer_width = "64"));

/// The `io_backend` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// io_uring when the probe succeeds, else std.
    #[default]
    Auto,
    Uring,
    Std,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Uring => "uring",
            Backend::Std => "std",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown io backend {0:?}: expected auto, uring or std")]
pub struct UnknownBackend(String);

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Backend, UnknownBackend> {
        match s {
            "auto" => Ok(Backend::Auto),
            "uring" => Ok(Backend::Uring),
            "std" => Ok(Backend::Std),
            other => Err(UnknownBackend(other.to_string())),
        }
    }
}

/// Names why io_uring could not be set up, from the errno the probe got: the one fact an
/// operator needs to decide whether the fallback is expected (qemu-user) or fixable (sysctl).
pub fn uring_failure_reason(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOSYS) => {
            "ENOSYS: this kernel has no io_uring (qemu-user, or built without CONFIG_IO_URING)"
                .to_string()
        }
        Some(code @ (libc::EPERM | libc::EACCES)) => format!(
            "{}: io_uring is not permitted (a seccomp filter, or sysctl kernel.io_uring_disabled)",
            if code == libc::EPERM {
                "EPERM"
            } else {
                "EACCES"
            }
        ),
        Some(libc::EINVAL) => {
            "EINVAL: the kernel's io_uring is too old for the setup bramble asks for".to_string()
        }
        _ => format!("other: {err}"),
    }
}

/// Why the io_uring writer did not start: the probe's errno, named.
fn reason_of(err: &WriterError) -> String {
    match err {
        WriterError::Start { source, .. } => uring_failure_reason(source),
        other => format!("other: {other}"),
    }
}

/// Why the disk writer could not start on the chosen backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("io_backend = \"uring\" but io_uring is unavailable: {reason}")]
    UringUnavailable {
        reason: String,
        #[source]
        source: WriterError,
    },
    #[error("io_backend = \"uring\" but this build has no io_uring (64-bit Linux only)")]
    UringNotBuilt,
    #[error(transparent)]
    Writer(#[from] WriterError),
}

/// What [`PROBE_FAIL_ENV`] asks the probe to fail with, read now.
#[cfg_attr(
    not(all(target_os = "linux", target_pointer_width = "64")),
    allow(dead_code)
)]
pub(crate) fn forced_probe_failure() -> Option<std::io::Error> {
    let value = std::env::var(PROBE_FAIL_ENV).ok()?;
    let errno = match value.trim() {
        "" => return None,
        "ENOSYS" => libc::ENOSYS,
        "EPERM" => libc::EPERM,
        "EACCES" => libc::EACCES,
        "EINVAL" => libc::EINVAL,
        _ => libc::EIO,
    };
    Some(std::io::Error::from_raw_os_error(errno))
}

impl DiskWriter {
    /// Starts the writer on the backend `choice` names. With `Auto`, an io_uring that fails its
    /// probe is logged once (with the reason) and the std backend is used instead.
    pub fn start_backend(
        config: impl Into<WriterConfig>,
        choice: Backend,
    ) -> Result<DiskWriter, BackendError> {
        let config = config.into();
        let uring = start_uring(&config, choice, uring_storage());
        select(config, choice, uring)
    }
}

/// Decides between the io_uring writer (already tried unless `choice` is std, None when not
/// built) and a std one.
fn select(
    config: WriterConfig,
    choice: Backend,
    uring: Option<Result<DiskWriter, WriterError>>,
) -> Result<DiskWriter, BackendError> {
    let std_writer = |config| Ok(DiskWriter::start_with(config, Arc::new(StdStorage))?);
    match (choice, uring) {
        (Backend::Std, _) => std_writer(config),
        (_, Some(Ok(writer))) => Ok(writer),
        (Backend::Uring, None) => Err(BackendError::UringNotBuilt),
        (Backend::Uring, Some(Err(e))) => Err(BackendError::UringUnavailable {
            reason: reason_of(&e),
            source: e,
        }),
        (Backend::Auto, None) => {
            tracing::info!("io_uring is not built for this target; using the std backend");
            std_writer(config)
        }
        (Backend::Auto, Some(Err(e))) => {
            tracing::warn!(
                "io_uring unavailable, falling back to the std backend: {}",
                reason_of(&e)
            );
            std_writer(config)
        }
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
type UringStorage = super::UringStorage;
/// Stands in for the io_uring backend where it is not built.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
type UringStorage = ();

fn uring_storage() -> Option<UringStorage> {
    URING_BUILT.then(UringStorage::default)
}

/// Tries the io_uring backend unless `choice` is std; None when this build has none.
fn start_uring(
    config: &WriterConfig,
    choice: Backend,
    storage: Option<UringStorage>,
) -> Option<Result<DiskWriter, WriterError>> {
    if choice == Backend::Std {
        return None;
    }
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    return storage.map(|s| DiskWriter::start_with(config.clone(), Arc::new(s)));
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    {
        let _ = (config, storage);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_errno() {
        // Proves each documented probe failure maps to a reason that names its errno.
        let reason = |errno| uring_failure_reason(&std::io::Error::from_raw_os_error(errno));
        assert!(reason(libc::ENOSYS).starts_with("ENOSYS"));
        assert!(reason(libc::EPERM).starts_with("EPERM"));
        assert!(reason(libc::EACCES).starts_with("EACCES"));
        assert!(reason(libc::EINVAL).starts_with("EINVAL"));
        assert!(reason(libc::ENOMEM).starts_with("other"));
        assert_eq!("uring".parse::<Backend>().ok(), Some(Backend::Uring));
        assert!("io_uring".parse::<Backend>().is_err());
    }

    #[tokio::test]
    async fn std_never_probes() {
        // Proves io_backend = std starts on std whatever io_uring would say.
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = DiskWriter::start_backend(dir.path(), Backend::Std).expect("start");
        assert_eq!(writer.backend(), "std");
        writer.shutdown().await;
    }

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[tokio::test]
    async fn auto_falls_back_and_uring_fails_fast() {
        // Proves a failed probe makes auto start on std and uring refuse, naming the errno;
        // and that without a forced failure (io_uring works on the test machine, else skipped)
        // auto picks uring.
        let dir = tempfile::tempdir().expect("tempdir");
        let failing = || {
            Some(super::super::UringStorage {
                probe_fail: Some(libc::ENOSYS),
            })
        };
        let config = WriterConfig::new(dir.path());
        let tried = start_uring(&config, Backend::Auto, failing());
        let writer = select(config.clone(), Backend::Auto, tried).expect("fallback");
        assert_eq!(writer.backend(), "std");
        writer.shutdown().await;
        let tried = start_uring(&config, Backend::Uring, failing());
        let err = select(config.clone(), Backend::Uring, tried).expect_err("uring must fail");
        assert!(err.to_string().contains("ENOSYS"), "{err}");
        let tried = start_uring(&config, Backend::Auto, uring_storage());
        match tried {
            Some(Ok(writer)) => {
                assert_eq!(writer.backend(), "uring");
                writer.shutdown().await;
            }
            Some(Err(e)) => eprintln!("SKIPPED auto picks uring: probe failed: {}", reason_of(&e)),
            None => unreachable!("built for 64-bit Linux"),
        }
    }
}
