//! The `bramble` command line against a running node: `topic create/list/describe/delete` print
//! what the contract says (kafka-topics-like) and fail with a non-zero exit and the Kafka error
//! name on errors; `serve --config` refuses unknown keys by name. Runs the real binary on a free
//! 127.0.0.1 port with a temp data dir.

mod common;

use std::fs;
use std::process::Output;

use common::{BIN, Broker, CLI_TIMEOUT, run_cli, wait_bounded};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn topic(broker: &Broker, args: &[&str]) -> Output {
    let addr = broker.addr();
    let mut full = vec!["topic"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-b", &addr]);
    run_cli(&full, broker.dir.path())
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} exited {}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

fn listed(broker: &Broker) -> Vec<String> {
    let out = topic(broker, &["list"]);
    assert_ok(&out, "topic list");
    stdout(&out)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Splits `k: v\tk: v…` into pairs.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split('\t')
        .filter(|f| !f.is_empty())
        .filter_map(|f| {
            f.split_once(": ")
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn topic_create_list_describe_delete() {
    let broker = Broker::start();

    let out = topic(&broker, &["create", "t1", "--partitions", "3"]);
    assert_ok(&out, "topic create t1");
    assert_eq!(stdout(&out).trim(), "Created topic t1.");

    assert!(
        listed(&broker).contains(&"t1".to_string()),
        "list: {:?}",
        listed(&broker)
    );

    let out = topic(&broker, &["describe", "t1"]);
    assert_ok(&out, "topic describe t1");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        4,
        "1 topic line + 3 partition lines expected:\n{text}"
    );
    let head = fields(lines[0]);
    assert_eq!(field(&head, "Topic"), Some("t1"), "{text}");
    assert_eq!(field(&head, "PartitionCount"), Some("3"), "{text}");
    assert_eq!(field(&head, "ReplicationFactor"), Some("1"), "{text}");
    let topic_id = field(&head, "TopicId").unwrap_or_else(|| panic!("no TopicId:\n{text}"));
    // Kafka prints a 22-char url-safe base64 uuid; a hyphenated uuid is as good. Never zero.
    let id_chars: Vec<char> = topic_id.chars().filter(|c| *c != '-').collect();
    assert!(
        matches!(topic_id.len(), 22 | 36),
        "TopicId {topic_id:?} is not a uuid"
    );
    assert!(
        id_chars.iter().any(|c| !matches!(c, '0' | 'A')),
        "zero TopicId {topic_id:?}"
    );
    for (p, line) in lines[1..].iter().enumerate() {
        assert!(
            line.starts_with('\t'),
            "partition lines start with a tab: {line:?}"
        );
        let f = fields(line);
        assert_eq!(field(&f, "Topic"), Some("t1"), "{line}");
        assert_eq!(
            field(&f, "Partition"),
            Some(p.to_string().as_str()),
            "{line}"
        );
        assert_eq!(field(&f, "Leader"), Some("1"), "{line}");
        assert_eq!(field(&f, "Replicas"), Some("1"), "{line}");
        assert_eq!(field(&f, "Isr"), Some("1"), "{line}");
    }

    let out = topic(&broker, &["create", "t1", "--partitions", "3"]);
    assert!(
        !out.status.success(),
        "creating t1 twice succeeded: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).to_lowercase().contains("exist"),
        "stderr: {}",
        stderr(&out)
    );

    let out = topic(&broker, &["delete", "t1"]);
    assert_ok(&out, "topic delete t1");
    assert_eq!(stdout(&out).trim(), "Deleted topic t1.");
    assert!(
        !listed(&broker).contains(&"t1".to_string()),
        "t1 still listed after delete"
    );

    let out = topic(&broker, &["describe", "t1"]);
    assert!(
        !out.status.success(),
        "describe of a deleted topic succeeded: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).to_lowercase().contains("unknown"),
        "stderr: {}",
        stderr(&out)
    );
}

#[test]
fn describe_and_delete_of_missing_topic_fail() {
    let broker = Broker::start();
    for action in ["describe", "delete"] {
        let out = topic(&broker, &[action, "no-such-topic"]);
        assert!(
            !out.status.success(),
            "{action} of a missing topic succeeded: {}",
            stdout(&out)
        );
        assert!(
            stderr(&out).to_lowercase().contains("unknown"),
            "{action}: stderr should name UNKNOWN_TOPIC_OR_PARTITION: {}",
            stderr(&out)
        );
    }
}

#[test]
fn create_with_config_shows_in_describe() {
    let broker = Broker::start();
    let out = topic(
        &broker,
        &["create", "t2", "--config", "retention.ms=3600000"],
    );
    assert_ok(&out, "topic create t2 --config");
    let out = topic(&broker, &["describe", "t2"]);
    assert_ok(&out, "topic describe t2");
    let text = stdout(&out);
    let head = fields(text.lines().next().unwrap_or(""));
    let configs = field(&head, "Configs").unwrap_or_else(|| panic!("no Configs:\n{text}"));
    assert!(
        configs.split(',').any(|kv| kv == "retention.ms=3600000"),
        "{text}"
    );
    assert_eq!(
        field(&head, "PartitionCount"),
        Some("1"),
        "default partitions: {text}"
    );
}

#[test]
fn serve_refuses_unknown_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bramble.toml");
    let data = dir.path().join("data");
    fs::write(
        &config,
        format!(
            "node_id = 1\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\nflux_capacitor = true\n",
            common::free_port(),
            data.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, CLI_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let err = fs::read_to_string(dir.path().join("err")).unwrap();
    let status = status.unwrap_or_else(|| panic!("serve kept running with an unknown key:\n{err}"));
    assert!(
        !status.success(),
        "serve accepted an unknown config key:\n{err}"
    );
    assert!(
        err.contains("flux_capacitor"),
        "error should name the key:\n{err}"
    );
}

/// `bramble status` names the broker, the disk backend in use and the topic totals.
#[test]
fn status_shows_backend_and_totals() {
    let broker = Broker::start();
    assert_ok(
        &topic(&broker, &["create", "st", "--partitions", "2"]),
        "topic create st",
    );
    let out = run_cli(&["status", "-b", &broker.addr()], broker.dir.path());
    assert_ok(&out, "status");
    let text = stdout(&out);
    assert!(text.starts_with("Broker: 1\t"), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "bramble.io.backend: uring" || l == "bramble.io.backend: std"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "Topics: 1\tPartitions: 2"),
        "{text}"
    );
}
