//! Shared by the integration tests: runs the real `bramble` binary on a free 127.0.0.1 port with
//! a temporary data dir, waits until it accepts connections, and kills it on drop. Also a few
//! raw Kafka wire helpers (ApiVersions v0) for tests that talk bytes.
#![allow(dead_code)] // each test crate uses a different subset

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_bramble");
pub const HOST: &str = "127.0.0.1";
/// How long a fresh debug build may take to accept connections on a loaded 2-core box.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Between readiness probes.
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// One readiness probe's connect().
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Read/write timeout on raw sockets.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a CLI invocation (`bramble topic …`) may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long SIGTERM / SIGKILL may take to end the process.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// A port picked by binding :0 may be taken before the broker binds it; retry this often.
pub const PORT_PICK_ATTEMPTS: usize = 3;
/// Largest response the raw helpers accept.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Lines of broker log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 60;

pub const API_KEY_API_VERSIONS: i16 = 18;
pub const ERROR_UNSUPPORTED_VERSION: i16 = 35;

pub fn free_port() -> u16 {
    TcpListener::bind((HOST, 0))
        .expect("bind :0")
        .local_addr()
        .unwrap()
        .port()
}

/// A running `bramble serve`; killed (SIGKILL) and reaped on drop. The data dir lives as long as
/// the value. On a panicking test the broker's log tail is printed.
pub struct Broker {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
    pub log_path: PathBuf,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with_config("")
    }

    /// `config_toml` (may be empty) goes into a file passed with `--config`.
    pub fn start_with_config(config_toml: &str) -> Broker {
        Broker::start_with(config_toml, &[])
    }

    /// Like [`Broker::start_with_config`], with extra environment variables for the broker.
    pub fn start_with(config_toml: &str, env: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        Broker::start_in(dir, &data_dir, config_toml, env)
    }

    /// Starts on an existing data directory (a restart, or one a test wrote); the log and config
    /// file go to a fresh temporary directory of their own.
    pub fn start_on(data_dir: &Path, config_toml: &str) -> Broker {
        Broker::start_in(
            tempfile::tempdir().expect("tempdir"),
            data_dir,
            config_toml,
            &[],
        )
    }

    fn start_in(dir: TempDir, data_dir: &Path, config_toml: &str, env: &[(&str, &str)]) -> Broker {
        let log_path = dir.path().join("broker.log");
        let mut failure = String::new();
        for _ in 0..PORT_PICK_ATTEMPTS {
            let port = free_port();
            let mut cmd = Command::new(BIN);
            cmd.arg("serve")
                .arg("--listen")
                .arg(format!("{HOST}:{port}"))
                .arg("--data-dir")
                .arg(data_dir)
                .arg("--node-id")
                .arg("1");
            if !config_toml.is_empty() {
                let config_path = dir.path().join("bramble.toml");
                fs::write(&config_path, config_toml).unwrap();
                cmd.arg("--config").arg(config_path);
            }
            let log = File::create(&log_path).unwrap();
            // A test run inside a systemd service must not make its brokers notify that manager.
            for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
                cmd.env_remove(var);
            }
            cmd.envs(env.iter().copied());
            let mut child = cmd
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn bramble");
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    return Broker {
                        child,
                        port,
                        dir,
                        log_path,
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    failure = format!("{e}\n{log}");
                    if !log.to_lowercase().contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("bramble did not start:\n{failure}");
    }

    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM and wait for the exit status (bounded).
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid} failed");
        wait_bounded(&mut self.child, EXIT_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "bramble ignored SIGTERM for {EXIT_TIMEOUT:?}\n{}",
                self.log_tail()
            )
        })
    }

    /// The last LOG_TAIL_LINES lines of the log, preceded by any panic messages (a backtrace
    /// would otherwise push them out of the tail).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("panicked at") || line.contains("memory allocation of") {
                out.push_str(&format!("PANIC: {line}\n"));
                if let Some(next) = lines.get(i + 1) {
                    out.push_str(&format!("PANIC: {next}\n"));
                }
            }
        }
        out.push_str(&lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n"));
        out
    }
}

/// Polls until `port` accepts a connection; Err if the child exits or STARTUP_TIMEOUT passes.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("bramble exited with {status} during startup"));
        }
        if TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok() {
            return Ok(());
        }
        thread::sleep(READY_POLL_INTERVAL);
    }
    Err(format!(
        "bramble did not accept on {addr} within {STARTUP_TIMEOUT:?}"
    ))
}

impl Drop for Broker {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "----- bramble log tail ({}) -----\n{}",
                self.log_path.display(),
                self.log_tail()
            );
        }
        let _ = self.child.kill();
        let _ = wait_bounded(&mut self.child, EXIT_TIMEOUT);
    }
}

/// Waits for a child at most `timeout`; None if it is still running.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(READY_POLL_INTERVAL);
    }
}

/// Runs the binary with `args` to completion (bounded by CLI_TIMEOUT), capturing output.
pub fn run_cli(args: &[&str], workdir: &Path) -> Output {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let out_path = workdir.join(format!("cli-{n}.out"));
    let err_path = workdir.join(format!("cli-{n}.err"));
    let mut child = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn bramble");
    let status = match wait_bounded(&mut child, CLI_TIMEOUT) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`bramble {}` still running after {CLI_TIMEOUT:?}",
                args.join(" ")
            );
        }
    };
    let output = Output {
        status,
        stdout: fs::read(&out_path).unwrap(),
        stderr: fs::read(&err_path).unwrap(),
    };
    let _ = fs::remove_file(out_path);
    let _ = fs::remove_file(err_path);
    output
}

// --- raw wire helpers -----------------------------------------------------------------------

pub fn connect(addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().unwrap();
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).expect("connect to broker");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Request header v1 (api key, version, correlation id, client id) followed by `body`, framed
/// with its i32 length.
pub fn frame_v1(api_key: i16, api_version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let client_id = b"bramble-it";
    let mut msg = Vec::new();
    msg.extend_from_slice(&api_key.to_be_bytes());
    msg.extend_from_slice(&api_version.to_be_bytes());
    msg.extend_from_slice(&correlation_id.to_be_bytes());
    msg.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    msg.extend_from_slice(client_id);
    msg.extend_from_slice(body);
    let mut framed = (msg.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&msg);
    framed
}

/// Reads one length-prefixed response body.
pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > RESPONSE_BYTES_MAX {
        return Err(std::io::Error::other(format!("bad response length {len}")));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// An ApiVersions answer in the v0 layout: error code and (api key, min, max) triples.
#[derive(Debug)]
pub struct ApiVersionsV0 {
    pub error_code: i16,
    pub apis: Vec<(i16, i16, i16)>,
}

/// Parses a v0-layout ApiVersions response body (after the length): correlation id, error
/// code, i32 array of (key, min, max); the whole body must be consumed.
pub fn parse_api_versions_v0(body: &[u8], correlation_id: i32) -> ApiVersionsV0 {
    let be16 = |at: usize| i16::from_be_bytes(body[at..at + 2].try_into().unwrap());
    let be32 = |at: usize| i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
    assert!(body.len() >= 10, "ApiVersions response too short: {body:?}");
    assert_eq!(be32(0), correlation_id, "correlation id");
    let error_code = be16(4);
    let n = be32(6);
    assert!(n >= 0, "negative api count {n}");
    assert_eq!(
        body.len(),
        10 + 6 * n as usize,
        "v0 body length for {n} apis: {body:?}"
    );
    let apis = (0..n as usize)
        .map(|i| {
            let at = 10 + 6 * i;
            (be16(at), be16(at + 2), be16(at + 4))
        })
        .collect();
    ApiVersionsV0 { error_code, apis }
}

/// Sends ApiVersions v0 on a fresh connection and checks the answer: no error, a non-empty
/// list that includes ApiVersions itself with v0 supported.
pub fn assert_api_versions_v0_ok(addr: &str) {
    let mut s = connect(addr);
    let corr = 0x5eed;
    s.write_all(&frame_v1(API_KEY_API_VERSIONS, 0, corr, &[]))
        .expect("send ApiVersions v0");
    let body = read_frame(&mut s).expect("ApiVersions v0 response");
    let answer = parse_api_versions_v0(&body, corr);
    assert_eq!(
        answer.error_code, 0,
        "ApiVersions v0 error code: {answer:?}"
    );
    assert!(!answer.apis.is_empty(), "ApiVersions v0 listed no APIs");
    assert!(
        answer
            .apis
            .iter()
            .any(|&(k, min, max)| k == API_KEY_API_VERSIONS && min == 0 && max >= 3),
        "ApiVersions (18) v0..v3+ not advertised: {answer:?}"
    );
    let _ = s.shutdown(Shutdown::Both);
}

/// Reads until the peer closes or `timeout` passes; true if it closed (EOF or reset).
pub fn peer_closes_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(READY_POLL_INTERVAL)).unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(_) => return true,
        }
    }
    false
}

/// A protocol string from `v`.
pub fn s(v: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(v.to_string())
}

/// Sends one request at `version` on a fresh connection with the project's own client and
/// returns the decoded answer (raw-frame tests of APIs no real client sends).
pub fn call<R: kafka_protocol::protocol::Request>(
    addr: &str,
    request: &R,
    version: i16,
) -> R::Response {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = bramble::client::Client::connect(addr).await.unwrap();
        client.call(request, version).await.unwrap()
    })
}
