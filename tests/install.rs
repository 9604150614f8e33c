//! scripts/install.sh into a temp `--prefix`, with the built binary: the first run installs the
//! binary, unit, sysusers and tmpfiles snippets byte for byte, a memory drop-in with the board
//! profile's memory_max_bytes and a config naming the board;
//! a second run changes nothing (every file reported unchanged, none rewritten); an edited
//! config survives a rerun with another board, whose MemoryMax replaces the old one. The
//! installed snippets are then applied under the prefix with `systemd-sysusers --root` and
//! `systemd-tmpfiles --root`, proving they parse and create the user and directories.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{BIN, CLI_TIMEOUT, wait_bounded};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// What the script installs: (path under the prefix, source in the repo, mode).
const FILES: [(&str, &str, u32); 4] = [
    ("usr/bin/bramble", "", 0o755),
    (
        "usr/lib/systemd/system/bramble.service",
        "systemd/bramble.service",
        0o644,
    ),
    (
        "usr/lib/sysusers.d/bramble.conf",
        "systemd/bramble.sysusers",
        0o644,
    ),
    (
        "usr/lib/tmpfiles.d/bramble.conf",
        "systemd/bramble.tmpfiles",
        0o644,
    ),
];
const DROPIN: &str = "etc/systemd/system/bramble.service.d/memory.conf";
const CONFIG: &str = "etc/bramble/bramble.toml";

/// Runs `bash scripts/install.sh --prefix PREFIX --bin BIN ARGS…` (bounded), capturing output.
fn install(prefix: &Path, args: &[&str]) -> Output {
    run(
        Command::new("bash")
            .arg(Path::new(REPO).join("scripts/install.sh"))
            .arg("--prefix")
            .arg(prefix)
            .arg("--bin")
            .arg(BIN)
            .args(args),
        prefix.parent().expect("prefix parent"),
    )
}

/// Runs `cmd` with stdout and stderr in files under `workdir`, at most CLI_TIMEOUT.
fn run(cmd: &mut Command, workdir: &Path) -> Output {
    let (out_path, err_path) = (workdir.join("run.out"), workdir.join("run.err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("out file"))
        .stderr(fs::File::create(&err_path).expect("err file"))
        .spawn()
        .expect("spawn");
    let status = wait_bounded(&mut child, CLI_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("{cmd:?} still running after {CLI_TIMEOUT:?}")
    });
    Output {
        status,
        stdout: fs::read(&out_path).expect("read out"),
        stderr: fs::read(&err_path).expect("read err"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        text(out)
    );
}

/// The word the script reported for `path` (installed, updated, unchanged, kept, …).
fn reported(out: &Output, path: &Path) -> String {
    let path = path.to_str().expect("utf-8 path");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (word, rest) = l.split_once(char::is_whitespace)?;
            (rest.trim_start().split(' ').next() == Some(path)).then(|| word.to_string())
        })
        .unwrap_or_else(|| panic!("nothing reported for {path}:\n{}", text(out)))
}

fn source(repo_path: &str) -> PathBuf {
    if repo_path.is_empty() {
        PathBuf::from(BIN)
    } else {
        Path::new(REPO).join(repo_path)
    }
}

fn mtime_ns(path: &Path) -> (i64, i64) {
    let m = fs::metadata(path).expect("metadata");
    (m.mtime(), m.mtime_nsec())
}

#[test]
fn install_twice_changes_nothing_and_keeps_an_edited_config() {
    // First run: every file in place, same bytes as its source, right mode; the drop-in holds
    // the pi-zero-2w profile's memory_max_bytes (192 MiB), the config names the board. Second
    // run: all reported unchanged/kept, mtimes untouched.
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("root");
    let first = install(&prefix, &["--board", "pi-zero-2w"]);
    assert_ok(&first, "first install");
    for (installed, src, mode) in FILES {
        let path = prefix.join(installed);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            bytes == fs::read(source(src)).expect("read source"),
            "{installed} differs from {}",
            source(src).display()
        );
        let got = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(got, mode, "mode of {installed}");
        assert_eq!(reported(&first, &path), "installed", "{installed}");
    }
    let dropin = fs::read_to_string(prefix.join(DROPIN)).expect("memory drop-in");
    assert!(
        dropin.contains("[Service]\nMemoryMax=201326592\n"),
        "{dropin}"
    );
    let config = fs::read_to_string(prefix.join(CONFIG)).expect("config");
    assert!(config.contains("\nboard = \"pi-zero-2w\"\n"), "{config}");
    assert_eq!(reported(&first, &prefix.join(CONFIG)), "installed");

    let all: Vec<PathBuf> = FILES
        .iter()
        .map(|(p, ..)| prefix.join(p))
        .chain([prefix.join(DROPIN), prefix.join(CONFIG)])
        .collect();
    let before: Vec<_> = all.iter().map(|p| mtime_ns(p)).collect();
    let second = install(&prefix, &["--board", "pi-zero-2w"]);
    assert_ok(&second, "second install");
    for path in &all {
        let word = reported(&second, path);
        assert!(
            word == "unchanged" || (word == "kept" && path.ends_with(CONFIG)),
            "second run {word} {}",
            path.display()
        );
    }
    let after: Vec<_> = all.iter().map(|p| mtime_ns(p)).collect();
    assert_eq!(before, after, "second run rewrote files");

    // A user's edit survives a rerun, even one naming another board; the drop-in follows it.
    let edited = "# mine\nlisten = \"0.0.0.0:9092\"\nadvertise = \"pi1.local:9092\"\n";
    fs::write(prefix.join(CONFIG), edited).expect("edit config");
    let third = install(&prefix, &["--board", "pi4"]);
    assert_ok(&third, "install --board pi4");
    assert_eq!(
        fs::read_to_string(prefix.join(CONFIG)).expect("config"),
        edited
    );
    assert_eq!(reported(&third, &prefix.join(CONFIG)), "kept");
    assert_eq!(reported(&third, &prefix.join(DROPIN)), "updated");
    let dropin = fs::read_to_string(prefix.join(DROPIN)).expect("memory drop-in");
    assert!(dropin.contains("MemoryMax=805306368\n"), "{dropin}");
}

#[test]
fn auto_board_under_a_prefix_needs_a_memory_max() {
    // Proves `--board auto` (the default) is refused under --prefix, where detection would
    // describe this machine rather than the target, unless MemoryMax is given; given it, the
    // config says `board = "auto"` and is one `bramble serve --check` accepts.
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("root");
    let refused = install(&prefix, &[]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("--board NAME"),
        "{}",
        text(&refused)
    );
    assert!(
        !prefix.join("usr").exists(),
        "installed something before refusing"
    );

    assert_ok(&install(&prefix, &["--memory-max", "300M"]), "install");
    let config = fs::read_to_string(prefix.join(CONFIG)).expect("config");
    assert!(config.contains("\nboard = \"auto\"\n"), "{config}");
    let dropin = fs::read_to_string(prefix.join(DROPIN)).expect("memory drop-in");
    assert!(dropin.contains("MemoryMax=300M\n"), "{dropin}");
    let check = run(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:1", "--config"])
            .arg(prefix.join(CONFIG))
            .args(["--data-dir", "/nonexistent/never-created", "--check"]),
        dir.path(),
    );
    assert_ok(&check, "serve --check with the installed config");
    assert!(text(&check).contains("settings ok"), "{}", text(&check));
}

#[test]
fn installed_snippets_create_the_user_and_directories() {
    // Proves the sysusers and tmpfiles snippets, as installed, are valid for systemd's own
    // tools: applied under the prefix they create the bramble user and /var/lib/bramble owned
    // by it, and /etc/bramble.
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("root");
    assert_ok(&install(&prefix, &["--board", "pi4"]), "install");
    let root = format!("--root={}", prefix.display());
    let sysusers = run(Command::new("systemd-sysusers").arg(&root), dir.path());
    assert_ok(&sysusers, "systemd-sysusers --root");
    let passwd = fs::read_to_string(prefix.join("etc/passwd")).expect("passwd under prefix");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("bramble:"))
        .unwrap_or_else(|| panic!("no bramble user:\n{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(fields.get(5), Some(&"/var/lib/bramble"), "home of {user}");
    let uid: u32 = fields[2].parse().expect("uid");

    let tmpfiles = run(
        Command::new("systemd-tmpfiles").arg(&root).arg("--create"),
        dir.path(),
    );
    assert_ok(&tmpfiles, "systemd-tmpfiles --root --create");
    let state = fs::metadata(prefix.join("var/lib/bramble")).expect("/var/lib/bramble");
    assert!(state.is_dir());
    assert_eq!(state.uid(), uid, "owner of /var/lib/bramble");
    assert_eq!(state.permissions().mode() & 0o777, 0o750);
    assert!(prefix.join("etc/bramble").is_dir());
}

#[test]
fn unknown_board_and_missing_binary_are_refused() {
    // Proves the script refuses, naming the problem, before installing anything.
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("root");
    let out = install(&prefix, &["--board", "no-such-board"]);
    assert!(!out.status.success(), "accepted an unknown board");
    assert!(
        text(&out).contains("pi4"),
        "known boards not listed: {}",
        text(&out)
    );
    let out = run(
        Command::new("bash")
            .arg(Path::new(REPO).join("scripts/install.sh"))
            .arg("--prefix")
            .arg(&prefix)
            .arg("--bin")
            .arg(dir.path().join("missing")),
        dir.path(),
    );
    assert!(!out.status.success(), "accepted a missing binary");
    assert!(
        !prefix.join("usr").exists(),
        "installed something before refusing"
    );
}
