//! Board profiles through the real binary: `board = "auto"` in a config file picks the profile
//! of the device-tree model (a file standing in for /proc/device-tree/model) and the broker
//! runs with its settings (seen in DescribeConfigs via `bramble status`); an unknown model
//! falls back to the generic profile with a log line; a budget that cannot fit the board stops
//! the node before it listens, naming the setting; `bramble board show` prints a profile's
//! memory model.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};

use common::{BIN, Broker, CLI_TIMEOUT, IO_TIMEOUT, run_cli, wait_bounded};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A value from `bramble status` (lines of `key: value`).
fn status_value(broker: &Broker, key: &str) -> Option<String> {
    let out = run_cli(&["status", "-b", &broker.addr()], broker.dir.path());
    assert!(out.status.success(), "status failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| Some(line.strip_prefix(key)?.strip_prefix(": ")?.to_string()))
}

fn model_file(dir: &std::path::Path, model: &str) -> String {
    let path = dir.join("model");
    // The kernel's file ends in a NUL, as here.
    fs::write(&path, format!("{model}\0")).unwrap();
    path.to_string_lossy().into_owned()
}

// Proves auto-detection applies the Pi Zero 2 W profile: named in DescribeConfigs, and its
// 2 MiB frame limit is the one enforced.
#[test]
fn auto_detects_the_pi_zero_2w() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_file(dir.path(), "Raspberry Pi Zero 2 W Rev 1.0");
    let broker = Broker::start_with(
        "board = \"auto\"\n",
        &[("BRAMBLE_DEVICE_TREE_MODEL", model.as_str())],
    );
    let log = fs::read_to_string(&broker.log_path).unwrap();
    assert!(
        log.contains("board profile applied") && log.contains("board=pi-zero-2w"),
        "{log}"
    );
    assert_eq!(
        status_value(&broker, "bramble.board").as_deref(),
        Some("pi-zero-2w/sd")
    );
    // The profile's 2 MiB frame_bytes_max is in force: a 3 MiB length prefix is refused at
    // once (the default, 16 MiB, would wait for the body instead).
    let mut stream = TcpStream::connect(broker.addr()).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(&(3 * 1024 * 1024i32).to_be_bytes())
        .unwrap();
    let mut buf = [0u8; 1];
    let read = stream.read(&mut buf);
    assert!(matches!(read, Ok(0)), "connection should close: {read:?}");
    let log = fs::read_to_string(&broker.log_path).unwrap();
    assert!(log.contains("refusing frame"), "{log}");
}

// Proves an unknown model falls back to the fallback profile (generic on x86-64, the smallest
// on ARM) and says so.
#[test]
fn unknown_model_falls_back_to_generic_with_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_file(dir.path(), "Acme Widget Board v2");
    let broker = Broker::start_with(
        "board = \"auto\"\n",
        &[("BRAMBLE_DEVICE_TREE_MODEL", model.as_str())],
    );
    let log = fs::read_to_string(&broker.log_path).unwrap();
    assert!(
        log.contains("no board profile for this model") && log.contains("Acme Widget Board v2"),
        "{log}"
    );
    assert!(
        log.contains(&format!("board={}", bramble::board::FALLBACK)),
        "{log}"
    );
}

// Proves a budget over the board's memory stops `serve` with the setting's name, before
// anything listens.
#[test]
fn a_budget_that_cannot_fit_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bramble.toml");
    fs::write(&config, "inflight_bytes_max = 536870912\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--board", "pi-zero-2w", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, CLI_TIMEOUT).expect("serve should exit at once");
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert!(!status.success(), "{all}");
    assert!(
        all.contains("inflight_bytes_max does not fit") && all.contains("192 MiB"),
        "{all}"
    );
    assert!(!all.contains("listening on"), "{all}");
    assert!(!dir.path().join("data").exists(), "nothing written: {all}");
}

// Proves `bramble board show` prints the layered settings and a memory model that fits, and
// `--medium` changes the flush policy.
#[test]
fn board_show_prints_settings_and_memory_model() {
    let dir = tempfile::tempdir().unwrap();
    let sd = run_cli(&["board", "show", "pi4"], dir.path());
    assert!(sd.status.success(), "{}", text(&sd));
    let sd = text(&sd);
    assert!(sd.contains("memory_max_bytes = 805306368"), "{sd}");
    assert!(sd.contains("flush_ms = 2"), "{sd}");
    assert!(sd.contains("fetch_inflight_bytes_max"), "{sd}");
    let nvme = run_cli(&["board", "show", "pi4", "--medium", "nvme"], dir.path());
    assert!(text(&nvme).contains("flush_ms = 0"), "{}", text(&nvme));
    let list = run_cli(&["board", "list"], dir.path());
    for name in ["pi-zero-2w", "pi3", "pi4", "pi5", "cm4", "generic-x86-64"] {
        assert!(text(&list).contains(name), "{name} in {}", text(&list));
    }
    let unknown = run_cli(&["board", "show", "pi9"], dir.path());
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("unknown board"),
        "{}",
        text(&unknown)
    );
}
