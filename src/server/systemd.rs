//! server::systemd: the node's side of systemd's notify protocol (`Type=notify`): READY=1 once
//! the node serves, STOPPING=1 when shutdown begins, and WATCHDOG=1 keep-alives while the node is
//! healthy. Messages are datagrams to `$NOTIFY_SOCKET`; without it (not run by systemd) every
//! call does nothing. Sending never fails the node: a lost notification costs a warning.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;

/// How long one notification may wait for room in systemd's socket queue. Sends run on the
/// runtime's threads; systemd drains its queue promptly, so this only bounds a stuck manager.
const NOTIFY_SEND_MS_MAX: u64 = 1000;

/// Where systemd listens for notifications, from `$NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    /// A socket file (`/run/systemd/notify`).
    Path(PathBuf),
    /// A Linux abstract socket, written `@name` (the name without the `@`).
    Abstract(Vec<u8>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SystemdError {
    #[error("NOTIFY_SOCKET is empty")]
    EmptySocket,
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an @abstract name")]
    UnsupportedSocket(String),
    #[error("WATCHDOG_USEC {0:?} is not a number of microseconds")]
    WatchdogUsec(String),
    #[error("WATCHDOG_PID {0:?} is not a process id")]
    WatchdogPid(String),
}

/// Parses `$NOTIFY_SOCKET`: an absolute path, or `@name` for an abstract socket. Other forms
/// (relative paths, systemd 254's `vsock:`) are refused rather than guessed at.
pub fn parse_notify_socket(value: &OsStr) -> Result<NotifyAddr, SystemdError> {
    let bytes = value.as_bytes();
    match bytes.first() {
        None => Err(SystemdError::EmptySocket),
        Some(b'/') => Ok(NotifyAddr::Path(PathBuf::from(value))),
        Some(b'@') if bytes.len() > 1 => Ok(NotifyAddr::Abstract(bytes[1..].to_vec())),
        Some(_) => Err(SystemdError::UnsupportedSocket(
            value.to_string_lossy().into_owned(),
        )),
    }
}

/// Sends one notification (newline-separated `KEY=value` lines) to `addr`.
pub fn send(addr: &NotifyAddr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(Duration::from_millis(NOTIFY_SEND_MS_MAX)))?;
    let sent = match addr {
        NotifyAddr::Path(path) => socket.send_to(state.as_bytes(), path)?,
        NotifyAddr::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let to = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &to)?
        }
    };
    if sent != state.len() {
        return Err(io::Error::other(format!(
            "short send: {sent} of {} bytes",
            state.len()
        )));
    }
    Ok(())
}

/// Sends `state` to `$NOTIFY_SOCKET` if it is set; a bad address or failed send is logged.
pub fn notify(state: &str) {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = parse_notify_socket(&value)
        .map_err(io::Error::other)
        .and_then(|addr| send(&addr, state));
    if let Err(e) = result {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}

/// The node is serving: the listener is bound and the logs are open and recovered.
pub fn notify_ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}"));
}

/// Shutdown has begun (systemd then shows the unit as deactivating, not failed).
pub fn notify_stopping() {
    notify("STOPPING=1\nSTATUS=shutting down");
}

/// Checks (and pings) per WatchdogSec.
const WATCHDOG_CHECKS_PER_INTERVAL: u64 = 4;

/// How often to check the node and send WATCHDOG=1: a quarter of `WATCHDOG_USEC`, or None when
/// no watchdog is asked for us — unset, zero, or `WATCHDOG_PID` naming another process. A
/// quarter, not systemd's suggested half: each check may take up to one period, and one slow
/// check (an SD card's fsync queue under load) must not by itself let WatchdogSec run out.
pub fn watchdog_period(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    own_pid: u32,
) -> Result<Option<Duration>, SystemdError> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid {
        let text = pid.to_string_lossy();
        let pid: u32 = text
            .parse()
            .map_err(|_| SystemdError::WatchdogPid(text.clone().into_owned()))?;
        if pid != own_pid {
            return Ok(None);
        }
    }
    let text = usec.to_string_lossy();
    let usec: u64 = text
        .parse()
        .map_err(|_| SystemdError::WatchdogUsec(text.clone().into_owned()))?;
    // At least 1 µs: a zero period would make no sense (and tokio's interval refuses it).
    Ok((usec > 0).then(|| Duration::from_micros((usec / WATCHDOG_CHECKS_PER_INTERVAL).max(1))))
}

/// Starts the watchdog task if systemd asked for one (`WATCHDOG_USEC`). Each period it sends
/// WATCHDOG=1 only after the disk writer thread answered a no-op job within the period, so a
/// wedged tokio runtime (the task never runs) or a stuck disk writer (no answer) stops the pings
/// and systemd restarts the node. Returns the task so shutdown can stop it.
pub fn spawn_watchdog(broker: Arc<Broker>) -> Option<tokio::task::JoinHandle<()>> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let period = match watchdog_period(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    ) {
        Ok(period) => period?,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the systemd watchdog settings");
            return None;
        }
    };
    tracing::info!(
        period_ms = period.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(watchdog_loop(broker, period)))
}

async fn watchdog_loop(broker: Arc<Broker>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    // After a stall, ping on the next healthy tick instead of a burst of catch-up pings.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A check answers within one period, so while healthy the pings are at most two
        // periods (half of WatchdogSec) apart; a stuck writer withholds them all.
        if healthy(&broker, period).await {
            notify("WATCHDOG=1");
        }
    }
}

/// Whether the node deserves a ping: its disk writer thread answered a no-op job within
/// `answer_within`. (That this runs at all shows the runtime is alive.)
async fn healthy(broker: &Broker, answer_within: Duration) -> bool {
    match tokio::time::timeout(answer_within, broker.ping_disk_writer()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "disk writer unavailable; withholding the watchdog ping");
            false
        }
        Err(_) => {
            tracing::warn!(
                answer_within_ms = answer_within.as_millis() as u64,
                "disk writer did not answer in time; withholding the watchdog ping"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_forms() {
        // Proves the two address forms systemd uses parse, and that the rest are refused.
        assert_eq!(
            parse_notify_socket(OsStr::new("/run/systemd/notify")),
            Ok(NotifyAddr::Path(PathBuf::from("/run/systemd/notify")))
        );
        assert_eq!(
            parse_notify_socket(OsStr::new("@/org/freedesktop/systemd1/notify/42")),
            Ok(NotifyAddr::Abstract(
                b"/org/freedesktop/systemd1/notify/42".to_vec()
            ))
        );
        assert_eq!(
            parse_notify_socket(OsStr::new("")),
            Err(SystemdError::EmptySocket)
        );
        for bad in ["@", "relative/notify", "vsock:2:1234"] {
            assert!(
                matches!(
                    parse_notify_socket(OsStr::new(bad)),
                    Err(SystemdError::UnsupportedSocket(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        // Proves a notification arrives whole on both a socket file and an abstract socket.
        use std::os::linux::net::SocketAddrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind path");
        send(&NotifyAddr::Path(path), "READY=1\nSTATUS=x").expect("send to path");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x");

        let name = format!("bramble-test-{}", std::process::id()).into_bytes();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).expect("name");
        let receiver = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send(&NotifyAddr::Abstract(name), "WATCHDOG=1").expect("send to abstract");
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn send_to_missing_socket_is_an_error_not_a_panic() {
        // Proves a vanished socket surfaces as an error (notify() logs it and carries on).
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = NotifyAddr::Path(dir.path().join("gone.sock"));
        assert!(send(&missing, "READY=1").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn healthy_only_while_the_disk_writer_answers() {
        // Proves the watchdog's health check passes on an open node and fails once its disk
        // writer has stopped, so a node whose writer is gone gets no WATCHDOG=1.
        let dir = tempfile::tempdir().expect("tempdir");
        let config = crate::config::Config {
            data_dir: dir.path().to_path_buf(),
            ..crate::config::Config::default()
        };
        let writer = crate::io::DiskWriter::start(dir.path()).expect("writer");
        let advertised = crate::broker::Advertised {
            host: "127.0.0.1".into(),
            port: 9092,
        };
        let broker = Broker::open(config, advertised, writer).expect("open broker");
        let period = Duration::from_secs(30);
        assert!(
            healthy(&broker, period).await,
            "open node reported unhealthy"
        );
        broker.shutdown().await;
        assert!(
            !healthy(&broker, period).await,
            "stopped writer reported healthy"
        );
    }

    #[test]
    fn watchdog_period_is_a_quarter_of_the_interval_for_our_pid_only() {
        // Proves the ping period is a quarter of WATCHDOG_USEC, and that WATCHDOG_PID for another
        // process, zero or unset mean no watchdog, while garbage is reported.
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            watchdog_period(os("30000000"), None, 7),
            Ok(Some(Duration::from_millis(7_500)))
        );
        assert_eq!(
            watchdog_period(os("200000"), os("7"), 7),
            Ok(Some(Duration::from_millis(50)))
        );
        assert_eq!(watchdog_period(os("200000"), os("8"), 7), Ok(None));
        assert_eq!(watchdog_period(os("0"), None, 7), Ok(None));
        assert_eq!(watchdog_period(None, os("7"), 7), Ok(None));
        assert!(matches!(
            watchdog_period(os("30s"), None, 7),
            Err(SystemdError::WatchdogUsec(_))
        ));
        assert!(matches!(
            watchdog_period(os("1"), os("me"), 7),
            Err(SystemdError::WatchdogPid(_))
        ));
    }
}
