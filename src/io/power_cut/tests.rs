//! Tests of the power-cut storage: after `cut()`, the real files hold exactly their durable
//! state; and the backend passes the storage conformance suite.

use std::path::Path;
use std::sync::Arc;

use super::*;

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Names in `dir`, sorted (keep links included, so a test sees any left behind).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    // Proves the power-cut backend behaves as a storage backend must while the power is on.
    let dir = tempfile::tempdir().expect("tempdir");
    super::super::conformance::check(Arc::new(PowerCutStorage::new()), dir.path()).await;
}

#[test]
fn data_falls_back_to_the_last_sync() {
    // Proves writes and appends after a sync are undone, overwrites below the synced length are
    // restored (the first original wins over later overwrites), a set_len below the synced
    // length is undone, and a synced file is left alone.
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let s = PowerCutStorage::new();
    let fa = s.open(&a, true).expect("create a");
    let fb = s.open(&b, true).expect("create b");
    let fc = s.open(&c, true).expect("create c");
    s.sync_dir(dir.path()).expect("sync dir");
    fa.write_at(b"0123456789", 0).expect("write");
    fa.sync_data().expect("sync");
    fa.write_at(b"abc", 8).expect("overwrite tail and extend");
    fa.write_at(b"XY", 2).expect("overwrite");
    fa.write_at(b"ZZZZ", 1).expect("overwrite again");
    fb.write_at(b"hello world", 0).expect("write");
    fb.sync_data().expect("sync");
    fb.set_len(3).expect("truncate");
    fb.write_at(b"!!!!!!!!!!!!!!!!", 3).expect("rewrite");
    fc.write_at(b"durable", 0).expect("write");
    fc.sync_data().expect("sync");
    let summary = s.cut();
    assert_eq!(read(&a), b"0123456789");
    assert_eq!(read(&b), b"hello world");
    assert_eq!(read(&c), b"durable");
    assert_eq!(summary.files, 2, "{summary}");
    assert_eq!(summary.dir_changes, 0, "{summary}");
    assert_eq!(summary.errors, 0, "{summary}");
    assert_eq!(summary.bytes_dropped, 1 + 8, "{summary}");
}

#[test]
fn unsynced_creations_vanish_and_synced_ones_stay() {
    // Proves a file or directory created without a sync of its parent is gone after the cut,
    // even with its data synced, while one whose parent was synced keeps its synced bytes.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let s = PowerCutStorage::new();
    let kept = s.open(&root.join("kept"), true).expect("create");
    kept.write_at(b"k", 0).expect("write");
    kept.sync_data().expect("sync");
    s.sync_dir(root).expect("sync dir");
    kept.write_at(b"lost", 1).expect("write");
    let lost = s.open(&root.join("lost"), true).expect("create");
    lost.write_at(b"synced data, unsynced name", 0)
        .expect("write");
    lost.sync_data().expect("sync");
    s.create_dir_all(&root.join("d/e")).expect("mkdir");
    s.open(&root.join("d/e/f"), true)
        .expect("create in new dir");
    s.sync_dir(&root.join("d/e")).expect("sync inner dir only");
    let summary = s.cut();
    assert_eq!(names(root), ["kept"]);
    assert_eq!(read(&root.join("kept")), b"k");
    assert_eq!(summary.errors, 0, "{summary}");
}

#[test]
fn removals_and_renames_are_undone_until_synced() {
    // Proves an unsynced removal brings the file back with its bytes, an unsynced rename over a
    // file puts both names back as they were, a synced removal stays done, and no keep link is
    // left behind either way.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let s = PowerCutStorage::new();
    for (name, text) in [("gone", "g"), ("back", "b"), ("old", "o"), ("new.tmp", "n")] {
        let f = s.open(&root.join(name), true).expect("create");
        f.write_at(text.as_bytes(), 0).expect("write");
        f.sync_data().expect("sync");
    }
    s.sync_dir(root).expect("sync dir");
    s.remove_file(&root.join("gone")).expect("remove");
    s.sync_dir(root).expect("sync dir");
    assert_eq!(
        names(root),
        ["back", "new.tmp", "old"],
        "a durable removal keeps nothing"
    );
    s.remove_file(&root.join("back")).expect("remove");
    s.rename(&root.join("new.tmp"), &root.join("old"))
        .expect("rename");
    assert!(names(root).iter().any(|n| is_keep_name(n)));
    assert_eq!(read(&root.join("old")), b"n");
    let summary = s.cut();
    assert_eq!(names(root), ["back", "new.tmp", "old"]);
    assert_eq!(read(&root.join("back")), b"b");
    assert_eq!(read(&root.join("old")), b"o");
    assert_eq!(read(&root.join("new.tmp")), b"n");
    assert_eq!(summary.dir_changes, 2, "{summary}");
    assert_eq!(summary.errors, 0, "{summary}");
}

#[test]
fn synced_rename_replaces_for_good() {
    // Proves a rename made durable by a sync of its directory survives the cut, the replaced
    // file's keep link is gone, and the renamed file's later unsynced bytes are still cut.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let s = PowerCutStorage::new();
    let old = s.open(&root.join("snap"), true).expect("create");
    old.write_at(b"old", 0).expect("write");
    old.sync_data().expect("sync");
    let tmp = s.open(&root.join("snap.tmp"), true).expect("create");
    tmp.write_at(b"new", 0).expect("write");
    tmp.sync_data().expect("sync");
    s.rename(&root.join("snap.tmp"), &root.join("snap"))
        .expect("rename");
    s.sync_dir(root).expect("sync dir");
    tmp.write_at(b"er", 3).expect("unsynced append");
    drop((old, tmp));
    let summary = s.cut();
    assert_eq!(names(root), ["snap"]);
    assert_eq!(read(&root.join("snap")), b"new");
    assert_eq!(summary.bytes_dropped, 2, "{summary}");
}

#[test]
fn removed_directory_comes_back_whole() {
    // Proves remove_dir_all before a sync of the parent is undone with the tree's contents, and
    // that after the sync the directory and its keep are gone.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let s = PowerCutStorage::new();
    let part = root.join("topic-0");
    s.create_dir_all(&part).expect("mkdir");
    let f = s
        .open(&part.join("00000000000000000000.log"), true)
        .expect("create");
    f.write_at(b"records", 0).expect("write");
    f.sync_data().expect("sync");
    s.sync_dir(&part).expect("sync part");
    s.sync_dir(root).expect("sync root");
    s.remove_dir_all(&part).expect("rmdir");
    assert!(!part.exists());
    let summary = s.cut();
    assert_eq!(read(&part.join("00000000000000000000.log")), b"records");
    assert_eq!(names(root), ["topic-0"]);
    assert_eq!(summary.errors, 0, "{summary}");

    let s = PowerCutStorage::new();
    s.remove_dir_all(&part).expect("rmdir");
    s.sync_dir(root).expect("sync root");
    assert!(names(root).is_empty(), "{:?}", names(root));
}

#[test]
fn keep_links_are_ignored_by_listings_and_swept_at_start() {
    // Proves the keep names are no partition directory, segment or snapshot to the code that
    // lists data directories, and that remove_leftovers clears them at any depth.
    let name = format!("{KEEP_PREFIX}7");
    assert!(is_keep_name(&name));
    assert!(crate::broker::dirs::parse_partition_dir(&name).is_none());
    let dir = tempfile::tempdir().expect("tempdir");
    let part = dir.path().join("t-0");
    std::fs::create_dir_all(part.join(&name)).expect("mkdir");
    std::fs::write(part.join(format!("{KEEP_PREFIX}8")), b"x").expect("write");
    std::fs::write(part.join("00000000000000000000.log"), b"").expect("write");
    assert!(
        !crate::broker::dirs::holds_records(&part).expect("holds_records"),
        "keep links are not records"
    );
    assert_eq!(
        PowerCutStorage::remove_leftovers(dir.path()).expect("sweep"),
        2
    );
    assert_eq!(names(&part), ["00000000000000000000.log"]);
}

#[test]
fn clean_files_are_forgotten_when_closed() {
    // Proves a closed file with nothing unsynced no longer holds a descriptor in the tracker,
    // while a closed file with unsynced bytes is still cut.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = PowerCutStorage::new();
    let clean = s.open(&dir.path().join("clean"), true).expect("create");
    clean.write_at(b"x", 0).expect("write");
    clean.sync_data().expect("sync");
    drop(clean);
    let dirty = s.open(&dir.path().join("dirty"), true).expect("create");
    dirty.write_at(b"y", 0).expect("write");
    drop(dirty);
    assert_eq!(s.lock().inodes.len(), 1);
    s.sync_dir(dir.path()).expect("sync dir");
    let summary = s.cut();
    assert_eq!(read(&dir.path().join("dirty")), b"");
    assert_eq!(summary.bytes_dropped, 1, "{summary}");
}

#[test]
fn entries_moved_outside_the_storage_are_skipped() {
    // Proves a pending change whose entry a std::fs rename moved away (as topic deletion does
    // with partition directories) is counted as skipped, not as an error, and the rest is cut.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let s = PowerCutStorage::new();
    s.create_dir_all(&root.join("t-0")).expect("mkdir");
    s.sync_dir(root).expect("sync root");
    let f = s.open(&root.join("t-0/a"), true).expect("create");
    f.write_at(b"abc", 0).expect("write");
    std::fs::rename(root.join("t-0"), root.join("t-0.x-delete")).expect("rename outside");
    let summary = s.cut();
    assert_eq!(summary.skipped, 1, "{summary}");
    assert_eq!(summary.errors, 0, "{summary}");
    assert_eq!(summary.bytes_dropped, 3, "{summary}");
    assert_eq!(read(&root.join("t-0.x-delete/a")), b"");
}

#[test]
fn a_file_found_on_disk_counts_as_durable() {
    // Proves opening an existing file takes its bytes as the synced state (a restart after a cut
    // starts from what the cut left), and a create-then-remove before any sync leaves nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::write(root.join("old"), b"from before").expect("write");
    let s = PowerCutStorage::new();
    let f = s.open(&root.join("old"), false).expect("open");
    f.write_at(b"FROM", 0).expect("overwrite");
    f.write_at(b"!", 11).expect("append");
    let tmp = s.open(&root.join("tmp"), true).expect("create");
    tmp.write_at(b"t", 0).expect("write");
    s.remove_file(&root.join("tmp")).expect("remove");
    let summary = s.cut();
    assert_eq!(names(root), ["old"]);
    assert_eq!(read(&root.join("old")), b"from before");
    assert_eq!(summary.bytes_restored, 4, "{summary}");
    assert_eq!(summary.errors + summary.skipped, 0, "{summary}");
}
