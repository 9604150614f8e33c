//! The disk writer backend as an operator sees it, on the real binary: with `io_backend = "auto"`
//! and the io_uring probe forced to fail (`BRAMBLE_IO_URING_PROBE_FAIL`, as under qemu-user or a
//! seccomp filter) the node logs one fallback line naming the errno, runs on std, and produce and
//! fetch (kcat) still work; with `io_backend = "uring"` the same failure stops the start with a
//! non-zero exit naming the reason; without a forced failure `uring` starts and DescribeConfigs of
//! the broker reports `bramble.io.backend = uring`. Each node runs on a free 127.0.0.1 port with
//! a temporary data dir.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use common::{
    CONNECT_TIMEOUT, EXIT_TIMEOUT, HOST, READY_POLL_INTERVAL, STARTUP_TIMEOUT, connect, frame_v1,
    free_port, read_frame, wait_bounded,
};

const PROBE_FAIL_ENV: &str = "BRAMBLE_IO_URING_PROBE_FAIL";
const API_KEY_DESCRIBE_CONFIGS: i16 = 32;
const RESOURCE_BROKER: i8 = 4;
const BACKEND_KEY: &str = "bramble.io.backend";
/// Records produced and fetched back through kcat.
/// What a node logs once it serves clients (src/node.rs).
const SERVING_LINE: &str = "bramble::node: serving";
const RECORDS: usize = 50;

/// A `bramble serve` started with an environment of our choosing; killed on drop.
struct Node {
    child: Child,
    port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn spawn(io_backend: &str, probe_fail: Option<&str>) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("bramble.toml");
        fs::write(&config, format!("io_backend = \"{io_backend}\"\n")).expect("config");
        let log_path = dir.path().join("broker.log");
        let log = File::create(&log_path).expect("log file");
        let mut cmd = Command::new(common::BIN);
        cmd.args(["serve", "--listen", &format!("{HOST}:{port}"), "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove(PROBE_FAIL_ENV)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(errno) = probe_fail {
            cmd.env(PROBE_FAIL_ENV, errno);
        }
        let child = cmd.spawn().expect("spawn bramble");
        Node {
            child,
            port,
            log_path,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// Waits until the node accepts connections and its log says it serves (a connection alone
    /// could reach another test's node that took the same free port first); panics with its log
    /// if it exits or is slow.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("bramble exited with {status}:\n{}", self.log());
            }
            if self.log().contains(SERVING_LINE)
                && TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok()
            {
                return;
            }
            std::thread::sleep(READY_POLL_INTERVAL);
        }
        panic!("bramble not ready in {STARTUP_TIMEOUT:?}:\n{}", self.log());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        wait_bounded(&mut self.child, STARTUP_TIMEOUT)
            .unwrap_or_else(|| panic!("bramble still running:\n{}", self.log()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- bramble log -----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = wait_bounded(&mut self.child, EXIT_TIMEOUT);
    }
}

fn kcat_present() -> bool {
    Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Produces RECORDS lines with kcat, reads them back from the beginning, and compares.
fn produce_and_fetch(addr: &str, topic: &str, workdir: &Path) {
    let sent: Vec<String> = (0..RECORDS).map(|i| format!("record-{i}")).collect();
    let mut producer = Command::new("kcat")
        .args(["-P", "-b", addr, "-t", topic, "-X", "acks=all"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn kcat -P");
    let mut stdin = producer.stdin.take().expect("kcat stdin");
    stdin
        .write_all((sent.join("\n") + "\n").as_bytes())
        .expect("feed kcat");
    drop(stdin);
    let status = wait_bounded(&mut producer, EXIT_TIMEOUT).expect("kcat -P finished");
    assert!(status.success(), "kcat -P exited {status}");
    let out_path = workdir.join("kcat.out");
    let mut consumer = Command::new("kcat")
        .args(["-C", "-b", addr, "-t", topic, "-o", "beginning", "-e"])
        .args(["-c", &RECORDS.to_string()])
        .stdout(File::create(&out_path).expect("kcat out"))
        .spawn()
        .expect("spawn kcat -C");
    let status = wait_bounded(&mut consumer, EXIT_TIMEOUT).expect("kcat -C finished");
    assert!(status.success(), "kcat -C exited {status}");
    let got = fs::read_to_string(&out_path).expect("kcat output");
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, sent, "fetched records");
}

/// DescribeConfigs v1 for this broker, asking only for BACKEND_KEY; returns its value.
fn described_backend(addr: &str) -> String {
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes()); // one resource
    body.push(RESOURCE_BROKER as u8);
    body.extend_from_slice(&0i16.to_be_bytes()); // "" = the broker answering
    body.extend_from_slice(&1i32.to_be_bytes()); // one key
    body.extend_from_slice(&(BACKEND_KEY.len() as i16).to_be_bytes());
    body.extend_from_slice(BACKEND_KEY.as_bytes());
    body.push(0); // include_synonyms = false
    let mut s = connect(addr);
    s.write_all(&frame_v1(API_KEY_DESCRIBE_CONFIGS, 1, 7, &body))
        .expect("send DescribeConfigs");
    let answer = read_frame(&mut s).expect("DescribeConfigs response");
    // The entry is the name (i16 length + bytes) followed by the value (same encoding).
    let name = [
        &(BACKEND_KEY.len() as i16).to_be_bytes()[..],
        BACKEND_KEY.as_bytes(),
    ]
    .concat();
    let at = answer
        .windows(name.len())
        .position(|w| w == name)
        .unwrap_or_else(|| panic!("{BACKEND_KEY} missing from {answer:?}"))
        + name.len();
    let len = i16::from_be_bytes([answer[at], answer[at + 1]]) as usize;
    String::from_utf8(answer[at + 2..at + 2 + len].to_vec()).expect("utf-8 value")
}

#[test]
fn auto_falls_back_to_std_when_the_probe_fails() {
    if !kcat_present() {
        eprintln!("SKIPPED: kcat not found");
        return;
    }
    let mut node = Node::spawn("auto", Some("ENOSYS"));
    node.wait_ready();
    let log = node.log();
    let fallback: Vec<&str> = log.lines().filter(|l| l.contains("falling back")).collect();
    assert_eq!(fallback.len(), 1, "one fallback line:\n{log}");
    assert!(
        fallback[0].contains("ENOSYS"),
        "reason named: {}",
        fallback[0]
    );
    assert!(
        log.contains("io_backend=\"std\""),
        "startup line names std:\n{log}"
    );
    assert_eq!(described_backend(&node.addr()), "std");
    produce_and_fetch(&node.addr(), "fallback", node._dir.path());
}

#[test]
fn uring_fails_fast_naming_the_reason() {
    let mut node = Node::spawn("uring", Some("EPERM"));
    let status = node.wait_exit();
    assert!(!status.success(), "must exit non-zero");
    let log = node.log();
    assert!(
        log.contains("io_uring is unavailable") && log.contains("EPERM"),
        "reason named:\n{log}"
    );
}

#[test]
fn uring_starts_when_available() {
    let mut node = Node::spawn("uring", None);
    // Where io_uring is missing (qemu-user, seccomp) this start must fail; say so and stop.
    if let Some(status) = wait_bounded(&mut node.child, READY_POLL_INTERVAL * 4) {
        let log = node.log();
        assert!(log.contains("io_uring is unavailable"), "{status}:\n{log}");
        eprintln!("SKIPPED: io_uring unavailable here:\n{log}");
        return;
    }
    node.wait_ready();
    let log = node.log();
    assert!(
        log.contains("io_backend=\"uring\""),
        "startup line names uring:\n{log}"
    );
    assert!(!log.contains("falling back"), "{log}");
    assert_eq!(described_backend(&node.addr()), "uring");
    if kcat_present() {
        produce_and_fetch(&node.addr(), "on-uring", node._dir.path());
    }
}
