//! bramble under systemd's notify protocol, with the test playing systemd: it binds the
//! `NOTIFY_SOCKET` datagram socket in a temp dir and runs the real binary on a free port with
//! `NOTIFY_SOCKET` and `WATCHDOG_USEC` set. It proves what `Type=notify` units ordered after
//! bramble rely on: when READY=1 arrives the listener answers Kafka requests and the records
//! acked before a restart are already recovered; WATCHDOG=1 keeps arriving while the node is
//! healthy; SIGTERM brings STOPPING=1 and exit 0; a notify socket nobody listens on costs a
//! warning, not the node. Also runs `systemd-analyze verify` on systemd/bramble.service.

mod common;

use std::fs::{self, File};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{
    BIN, EXIT_TIMEOUT, HOST, LOG_TAIL_LINES, PORT_PICK_ATTEMPTS, READY_POLL_INTERVAL,
    STARTUP_TIMEOUT, assert_api_versions_v0_ok, free_port, run_cli, wait_bounded,
};

/// The watchdog interval the test asks for: pings every 100 ms.
const WATCHDOG_USEC: &str = "200000";
/// Pings that count as "repeatedly".
const WATCHDOG_PINGS_MIN: usize = 3;
/// How long any awaited notification may take (a debug build on a loaded 2-core box).
const NOTIFY_TIMEOUT: Duration = STARTUP_TIMEOUT;
/// Records acked before the restart, and where.
const RECORDS: usize = 50;
const TOPIC: &str = "kept";
const PARTITIONS: i32 = 2;
/// Largest notification read (systemd itself accepts up to a page).
const NOTIFY_BYTES_MAX: usize = 4096;
/// How long `systemd-analyze verify` may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// The test's stand-in for systemd's notify socket.
struct NotifySocket {
    socket: UnixDatagram,
    /// `NOTIFY_SOCKET` as the node gets it: a path, or `@name` for an abstract socket.
    env_value: String,
}

impl NotifySocket {
    fn bind_path(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(READY_POLL_INTERVAL))
            .expect("read timeout");
        let env_value = path.to_str().expect("utf-8 temp path").to_string();
        NotifySocket { socket, env_value }
    }

    fn bind_abstract() -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("bramble-it-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
        socket
            .set_read_timeout(Some(READY_POLL_INTERVAL))
            .expect("read timeout");
        NotifySocket {
            socket,
            env_value: format!("@{name}"),
        }
    }

    /// Reads notifications until one has the line `line`, and returns it. Panics (with every
    /// message seen) if the node exits first or NOTIFY_TIMEOUT passes.
    fn wait_for(&self, node: &mut Node, line: &str) -> String {
        let deadline = Instant::now() + NOTIFY_TIMEOUT;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; NOTIFY_BYTES_MAX];
        while Instant::now() < deadline {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if msg.lines().any(|l| l == line) {
                        return msg;
                    }
                    seen.push(msg);
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if let Some(status) = node.child.try_wait().expect("try_wait") {
                        panic!("bramble exited with {status} before {line}; saw {seen:?}");
                    }
                }
                Err(e) => panic!("recv on the notify socket: {e}"),
            }
        }
        panic!("no {line} within {NOTIFY_TIMEOUT:?}; saw {seen:?}");
    }
}

/// A `bramble serve` run as systemd would run it; killed on drop (log tail printed on panic).
struct Node {
    child: Child,
    port: u16,
    log_path: PathBuf,
}

impl Node {
    /// Starts the node on `data_dir` with NOTIFY_SOCKET and WATCHDOG_USEC set; does not wait.
    fn spawn(data_dir: &Path, notify_socket: &str, log_path: &Path) -> Node {
        let port = free_port();
        let log = File::create(log_path).expect("log file");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--listen")
            .arg(format!("{HOST}:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env("NOTIFY_SOCKET", notify_socket)
            .env("WATCHDOG_USEC", WATCHDOG_USEC)
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("spawn bramble");
        Node {
            child,
            port,
            log_path: log_path.to_path_buf(),
        }
    }

    /// Starts the node and waits for READY=1; returns the node and the READY message. Retries
    /// on another port if the picked one was taken before the node bound it.
    fn start_ready(data_dir: &Path, notify: &NotifySocket, log_path: &Path) -> (Node, String) {
        for _ in 0..PORT_PICK_ATTEMPTS {
            let mut node = Node::spawn(data_dir, &notify.env_value, log_path);
            let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                notify.wait_for(&mut node, "READY=1")
            }));
            match ready {
                Ok(msg) => return (node, msg),
                Err(panic) if node.log().contains("in use") => drop((node, panic)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        panic!("no free port after {PORT_PICK_ATTEMPTS} attempts");
    }

    fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, then STOPPING=1 must arrive and the process must end; returns its status.
    fn terminate(&mut self, notify: &NotifySocket) -> ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.expect("run kill").success(), "kill -TERM {pid}");
        notify.wait_for(self, "STOPPING=1");
        wait_bounded(&mut self.child, EXIT_TIMEOUT)
            .unwrap_or_else(|| panic!("bramble ignored SIGTERM for {EXIT_TIMEOUT:?}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "----- bramble log tail ({}) -----\n{}",
                self.log_path.display(),
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = wait_bounded(&mut self.child, EXIT_TIMEOUT);
    }
}

/// Produces RECORDS records (acks=all) to TOPIC with `bramble bench produce`.
fn produce(addr: &str, workdir: &Path) {
    let (records, partitions) = (RECORDS.to_string(), PARTITIONS.to_string());
    let out = run_cli(
        &[
            "bench",
            "produce",
            "-b",
            addr,
            "--topic",
            TOPIC,
            "--partitions",
            &partitions,
            "--messages",
            &records,
            "--record-size",
            "16",
            "--acks",
            "all",
            "--json",
        ],
        workdir,
    );
    assert!(
        out.status.success(),
        "bench produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Latest offset of each partition of TOPIC (ListOffsets, via the crate's client).
fn latest_offsets(addr: &str) -> Vec<i64> {
    const LATEST: i64 = -1;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = bramble::client::Client::connect(addr)
            .await
            .expect("connect");
        let offsets = bramble::client::admin::topic_offsets(&mut client, TOPIC, LATEST)
            .await
            .expect("ListOffsets");
        offsets.into_values().collect()
    })
}

#[test]
fn ready_only_when_serving_and_recovered_then_watchdog_then_stopping() {
    // First life: READY=1 means the port answers; then records are acked and the node stopped.
    // Second life on the same data dir: at READY=1 the records are already readable, the READY
    // status counts the recovered partitions, and the "listening" line (logged after the logs
    // were opened) is already written; pings follow; SIGTERM gives STOPPING=1 and exit 0.
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind_path(dir.path());
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("broker.log");

    let (mut node, ready) = Node::start_ready(&data_dir, &notify, &log_path);
    assert!(
        ready.contains("STATUS=serving on"),
        "READY status: {ready:?}"
    );
    assert_api_versions_v0_ok(&node.addr());
    produce(&node.addr(), dir.path());
    let status = node.terminate(&notify);
    assert!(status.success(), "first life exited with {status}");
    drop(node);

    let (mut node, ready) = Node::start_ready(&data_dir, &notify, &log_path);
    assert!(
        node.log().contains("listening on"),
        "READY=1 before the node logged that it listens (after Broker::open):\n{}",
        node.log()
    );
    let offsets = latest_offsets(&node.addr());
    assert_eq!(
        offsets.iter().sum::<i64>(),
        RECORDS as i64,
        "records recovered at READY, per partition: {offsets:?}"
    );
    assert!(
        ready.contains(&format!("{PARTITIONS} partitions recovered")),
        "READY status should count the recovered partitions: {ready:?}"
    );
    for _ in 0..WATCHDOG_PINGS_MIN {
        notify.wait_for(&mut node, "WATCHDOG=1");
    }
    assert_api_versions_v0_ok(&node.addr());
    let status = node.terminate(&notify);
    assert!(status.success(), "second life exited with {status}");
}

#[test]
fn abstract_notify_socket_gets_ready_and_stopping() {
    // Proves the `@name` form of NOTIFY_SOCKET (an abstract socket, as systemd in containers
    // and the test-suite of systemd itself use) carries READY=1, WATCHDOG=1 and STOPPING=1.
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind_abstract();
    let log_path = dir.path().join("broker.log");
    let (mut node, _ready) = Node::start_ready(&dir.path().join("data"), &notify, &log_path);
    assert_api_versions_v0_ok(&node.addr());
    notify.wait_for(&mut node, "WATCHDOG=1");
    let status = node.terminate(&notify);
    assert!(status.success(), "exited with {status}");
}

#[test]
fn unreachable_notify_socket_costs_a_warning_not_the_node() {
    // Proves a NOTIFY_SOCKET nobody listens on leaves the node serving (READY is logged as
    // undeliverable) and that it still stops cleanly with exit 0.
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("broker.log");
    let nobody = dir.path().join("nobody.sock");
    let mut node = Node::spawn(
        &dir.path().join("data"),
        nobody.to_str().expect("utf-8 temp path"),
        &log_path,
    );
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !node.log().contains("cannot notify systemd") {
        assert!(Instant::now() < deadline, "no warning:\n{}", node.log());
        assert!(node.child.try_wait().expect("try_wait").is_none(), "exited");
        std::thread::sleep(READY_POLL_INTERVAL);
    }
    assert_api_versions_v0_ok(&node.addr());
    let pid = node.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.expect("run kill").success());
    let status = wait_bounded(&mut node.child, EXIT_TIMEOUT).expect("exit after SIGTERM");
    assert!(status.success(), "exited with {status}");
}

/// Runs `systemd-analyze verify` on `unit`; returns (success, stdout + stderr).
fn systemd_analyze_verify(unit: &Path) -> (bool, String) {
    let dir = unit.parent().expect("unit dir");
    let (out_path, err_path) = (dir.join("verify.out"), dir.join("verify.err"));
    let mut child = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("out file"))
        .stderr(File::create(&err_path).expect("err file"))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}); scripts/setup.sh installs it (Debian: systemd)"
            )
        });
    let status = wait_bounded(&mut child, VERIFY_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("systemd-analyze verify still running after {VERIFY_TIMEOUT:?}")
    });
    let mut output = fs::read_to_string(&out_path).unwrap_or_default();
    output.push_str(&fs::read_to_string(&err_path).unwrap_or_default());
    (status.success(), output)
}

/// Lines of `systemd-analyze verify` output about our unit (the container this may run in has
/// no systemd as PID 1; anything it says about other units is not ours to fix).
fn lines_about_unit(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.contains("bramble.service"))
        .collect()
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    // Proves systemd/bramble.service parses with no warning or error. verify insists that
    // ExecStart's binary exists, so it checks a copy whose ExecStart names the built binary;
    // a second copy with a misspelt key proves the check does report problems here.
    let unit = include_str!("../systemd/bramble.service");
    assert!(
        unit.contains("ExecStart=/usr/bin/bramble "),
        "the test rewrites ExecStart=/usr/bin/bramble"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("bramble.service");
    fs::write(
        &copy,
        unit.replace("ExecStart=/usr/bin/bramble ", &format!("ExecStart={BIN} ")),
    )
    .expect("write unit copy");
    let (ok, output) = systemd_analyze_verify(&copy);
    assert!(ok, "systemd-analyze verify failed:\n{output}");
    let about = lines_about_unit(&output);
    assert!(about.is_empty(), "systemd-analyze verify: {about:#?}");

    let broken_dir = tempfile::tempdir().expect("tempdir");
    let broken = broken_dir.path().join("bramble.service");
    let misspelt = fs::read_to_string(&copy)
        .expect("read copy")
        .replace("NotifyAccess=main", "NotifyAcess=main");
    fs::write(&broken, misspelt).expect("write broken copy");
    let (_, output) = systemd_analyze_verify(&broken);
    assert!(
        lines_about_unit(&output)
            .iter()
            .any(|l| l.contains("NotifyAcess")),
        "systemd-analyze verify did not report a misspelt key:\n{output}"
    );
}
