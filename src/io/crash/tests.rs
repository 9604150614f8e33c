//! io::crash::tests: the crash backend's own checks: plain-file semantics while powered (the
//! shared I/O conformance suite checks more of them), and what each cut mode leaves.

use super::*;
use std::collections::HashSet;

fn fixture() -> (tempfile::TempDir, CrashStorage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = CrashStorage::new(dir.path());
    (dir, storage)
}

fn content(s: &CrashStorage, path: &Path) -> Option<Vec<u8>> {
    let f = s.open(path, false).ok()?;
    let mut buf = vec![0u8; f.len().expect("len") as usize];
    f.read_at(&mut buf, 0).expect("read");
    Some(buf)
}

#[test]
fn behaves_like_plain_files_while_powered() {
    // Proves the same trait semantics as StdStorage: writes past the end extend with zeros,
    // reads past the end fail, set_len truncates and extends, missing files are NotFound,
    // and entries show up in the real root for `std::fs` listing.
    let (dir, s) = fixture();
    let path = dir.path().join("a");
    let f = s.open(&path, true).expect("create");
    f.write_at(b"world", 6).expect("write");
    f.write_at(b"hello", 0).expect("write");
    f.sync_data().expect("sync");
    let mut buf = [0u8; 11];
    f.read_at(&mut buf, 0).expect("read");
    assert_eq!(&buf, b"hello\0world");
    assert_eq!(f.len().expect("len"), 11);
    let eof = f.read_at(&mut [0u8; 2], 10).expect_err("read past end");
    assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
    f.set_len(3).expect("truncate");
    f.set_len(5).expect("extend");
    assert_eq!(content(&s, &path).expect("exists"), b"hel\0\0");
    assert!(path.exists(), "entries are mirrored for std::fs");
    let missing = s.open(&dir.path().join("missing"), false);
    assert_eq!(
        missing.expect_err("missing").kind(),
        std::io::ErrorKind::NotFound
    );
    let nested = dir.path().join("x/y");
    s.create_dir_all(&nested).expect("mkdir -p");
    s.create_dir_all(&nested).expect("mkdir -p again");
    s.open(&nested.join("f"), true).expect("create nested");
    assert!(nested.join("f").exists());
    s.sync_dir(&nested).expect("sync dir");
    s.remove_file(&path).expect("remove");
    assert!(!path.exists());
    assert!(s.remove_file(&path).is_err(), "removing twice fails");
    s.remove_dir_all(&dir.path().join("x")).expect("rm -r");
    assert!(!nested.exists());
    assert!(s.open(&nested.join("g"), true).is_err(), "no parent");
}

#[test]
fn drop_unsynced_keeps_exactly_the_synced_state() {
    // Proves DropUnsynced keeps synced bytes, loses unsynced ones, loses a file whose entry
    // was never synced in its directory, resurrects a removal never synced, and kills the
    // handles opened before the cut.
    let (dir, s) = fixture();
    let kept = dir.path().join("kept");
    let lost = dir.path().join("lost");
    let removed = dir.path().join("removed");
    let k = s.open(&kept, true).expect("create");
    let r = s.open(&removed, true).expect("create");
    r.write_at(b"old", 0).expect("write");
    r.sync_data().expect("sync");
    s.sync_dir(dir.path()).expect("sync dir");
    k.write_at(b"durable", 0).expect("write");
    k.sync_data().expect("sync");
    k.write_at(b" and not", 7).expect("write");
    let l = s.open(&lost, true).expect("create");
    l.write_at(b"x", 0).expect("write");
    l.sync_data().expect("sync");
    s.remove_file(&removed).expect("remove");
    s.pull_plug(CutMode::DropUnsynced, 1).expect("cut");
    assert!(s.is_off());
    assert!(k.write_at(b"!", 0).is_err(), "old handles are dead");
    assert!(s.open(&kept, false).is_err(), "the machine is off");
    s.power_on();
    assert!(
        k.read_at(&mut [0u8; 1], 0).is_err(),
        "old handles stay dead"
    );
    assert_eq!(content(&s, &kept).expect("kept"), b"durable");
    assert_eq!(content(&s, &lost), None);
    assert!(!lost.exists(), "the real root mirrors the crash");
    assert_eq!(content(&s, &removed).expect("resurrected"), b"old");
}

#[test]
fn keep_prefix_and_tear_last_leave_what_a_disk_could() {
    // Proves, over many seeds, that KeepPrefix leaves the synced bytes followed by a prefix
    // of the unsynced appends, and TearLast keeps every write but the last, whose full length
    // exists with a tail that may differ from what was written.
    const SEEDS: u64 = 200;
    let synced = b"synced|".to_vec();
    let appends: [&[u8]; 3] = [b"one|", b"two|", b"three"];
    let full: Vec<u8> = [synced.clone(), appends.concat()].concat();
    for seed in 0..SEEDS {
        for mode in [CutMode::KeepPrefix, CutMode::TearLast] {
            let (dir, s) = fixture();
            let path = dir.path().join("f");
            let f = s.open(&path, true).expect("create");
            s.sync_dir(dir.path()).expect("sync dir");
            f.write_at(&synced, 0).expect("write");
            f.sync_data().expect("sync");
            let mut at = synced.len() as u64;
            for a in appends {
                f.write_at(a, at).expect("write");
                at += a.len() as u64;
            }
            s.pull_plug(mode, seed).expect("cut");
            s.power_on();
            let got = content(&s, &path).expect("file survives");
            assert!(got.starts_with(&synced), "seed {seed} {mode:?}: {got:?}");
            match mode {
                CutMode::KeepPrefix => {
                    assert!(full.starts_with(&got), "seed {seed}: {got:?}")
                }
                _ => {
                    assert_eq!(got.len(), full.len(), "seed {seed}: {got:?}");
                    let last = full.len() - appends[2].len();
                    assert_eq!(got[..last], full[..last], "seed {seed}");
                }
            }
        }
    }
}

#[test]
fn scramble_mixes_whole_sectors_of_old_and_new() {
    // Proves Scramble leaves every sector as either its synced or its latest content (never
    // a mix inside a sector), at the synced or the latest length, and that across seeds both
    // kinds of sector and both lengths occur.
    const SEEDS: u64 = 100;
    const SECTORS: usize = 4;
    let old = vec![1u8; SECTOR_BYTES * 2];
    let new = vec![2u8; SECTOR_BYTES * SECTORS];
    let (mut saw_old, mut saw_new, mut lengths) = (false, false, HashSet::new());
    for seed in 0..SEEDS {
        let (dir, s) = fixture();
        let path = dir.path().join("f");
        let f = s.open(&path, true).expect("create");
        s.sync_dir(dir.path()).expect("sync dir");
        f.write_at(&old, 0).expect("write");
        f.sync_data().expect("sync");
        f.write_at(&new, 0).expect("write");
        s.pull_plug(CutMode::Scramble, seed).expect("cut");
        s.power_on();
        let got = content(&s, &path).expect("file survives");
        assert!(
            got.len() == old.len() || got.len() == new.len(),
            "seed {seed}"
        );
        lengths.insert(got.len());
        for (i, sector) in got.chunks(SECTOR_BYTES).enumerate() {
            let was = old.get(i * SECTOR_BYTES).copied().unwrap_or(0);
            let is_old = sector.iter().all(|&b| b == was);
            let is_new = sector.iter().all(|&b| b == 2);
            assert!(is_old || is_new, "seed {seed}: sector {i} is mixed");
            saw_old |= is_old;
            saw_new |= is_new;
        }
    }
    assert!(saw_old && saw_new && lengths.len() == 2);
}

#[test]
fn an_armed_cut_fires_at_its_call_and_directories_need_their_parent_synced() {
    // Proves pull_plug_after(n) lets exactly n mutating calls through and fails the next, and
    // a directory created but not synced in its parent vanishes with the files inside it,
    // even files whose own entries were synced.
    let (dir, s) = fixture();
    let sub = dir.path().join("sub");
    s.pull_plug_after(4, CutMode::DropUnsynced, 7);
    s.create_dir_all(&sub).expect("op 1");
    let f = s.open(&sub.join("f"), true).expect("op 2");
    f.write_at(b"data", 0).expect("op 3");
    f.sync_data().expect("op 4");
    assert_eq!(s.ops(), 4);
    assert!(s.sync_dir(&sub).is_err(), "op 5 meets the cut");
    assert!(s.is_off());
    assert_eq!(s.cut_call(), Some("sync_dir"));
    s.power_on();
    assert!(!sub.exists());
    assert_eq!(content(&s, &sub.join("f")), None);
    s.create_dir_all(&sub).expect("mkdir");
    s.sync_dir(dir.path()).expect("sync root");
    s.open(&sub.join("f"), true).expect("create");
    s.sync_dir(&sub).expect("sync sub");
    s.pull_plug(CutMode::DropUnsynced, 8).expect("cut");
    s.power_on();
    assert_eq!(content(&s, &sub.join("f")).expect("durable"), b"");
}

/// `old` (durable, holding "old") and `new` (durable, holding "new"), both entries synced.
fn two_durable_files(s: &CrashStorage, dir: &Path) -> (PathBuf, PathBuf) {
    let (old, new) = (dir.join("old"), dir.join("new"));
    for (path, bytes) in [(&old, b"old"), (&new, b"new")] {
        let f = s.open(path, true).expect("create");
        f.write_at(bytes, 0).expect("write");
        f.sync_data().expect("sync");
    }
    s.sync_dir(dir).expect("sync dir");
    (old, new)
}

#[test]
fn rename_replaces_the_target_and_open_handles_keep_their_file() {
    // Proves rename while powered: `to` names the moved file at once, `from` is gone, a handle
    // of the replaced file still reads its old bytes, a handle of the moved file writes into
    // what `to` now names, and the real root mirrors the new names.
    let (dir, s) = fixture();
    let (old, new) = two_durable_files(&s, dir.path());
    let replaced = s.open(&old, false).expect("open old");
    let moved = s.open(&new, false).expect("open new");
    s.rename(&new, &old).expect("rename");
    assert_eq!(content(&s, &old).expect("old names the moved file"), b"new");
    assert_eq!(content(&s, &new), None);
    assert!(!new.exists() && old.exists(), "mirrored");
    let mut buf = [0u8; 3];
    replaced
        .read_at(&mut buf, 0)
        .expect("replaced handle reads");
    assert_eq!(&buf, b"old");
    moved
        .write_at(b"NEW", 0)
        .expect("write through the moved handle");
    assert_eq!(content(&s, &old).expect("exists"), b"NEW");
    let missing = s.rename(&new, &old).expect_err("rename of a missing file");
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    s.create_dir_all(&dir.path().join("d")).expect("mkdir");
    let onto_dir = s.rename(&old, &dir.path().join("d"));
    assert_eq!(
        onto_dir.expect_err("file over dir").kind(),
        std::io::ErrorKind::IsADirectory
    );
}

#[test]
fn rename_is_durable_only_after_the_directory_sync() {
    // Proves a rename not followed by sync_dir is lost whole by DropUnsynced (both names as
    // before, with their synced bytes), and one followed by sync_dir survives it.
    let (dir, s) = fixture();
    let (old, new) = two_durable_files(&s, dir.path());
    s.rename(&new, &old).expect("rename");
    s.pull_plug(CutMode::DropUnsynced, 3).expect("cut");
    s.power_on();
    assert_eq!(content(&s, &old).expect("old name kept"), b"old");
    assert_eq!(content(&s, &new).expect("new name kept"), b"new");
    s.rename(&new, &old).expect("rename");
    s.sync_dir(dir.path()).expect("sync dir");
    s.pull_plug(CutMode::DropUnsynced, 4).expect("cut");
    s.power_on();
    assert_eq!(content(&s, &old).expect("renamed"), b"new");
    assert_eq!(content(&s, &new), None);
    assert!(!new.exists(), "the real root mirrors the crash");
}

#[test]
fn a_cut_leaves_a_rename_whole_or_not_at_all_in_every_mode() {
    // Proves, over many seeds and every mode, that an unsynced rename over an existing file is
    // atomic (either both old names with their bytes, or only `to` holding the moved bytes;
    // never neither, never both holding the same file), that journal order holds (a file
    // created then renamed before any sync shows up under at most one of its names), and that
    // both outcomes occur.
    const SEEDS: u64 = 100;
    let mut outcomes = HashSet::new();
    for seed in 0..SEEDS {
        for mode in CutMode::ALL {
            let (dir, s) = fixture();
            let (old, new) = two_durable_files(&s, dir.path());
            let (tmp, fresh) = (dir.path().join("tmp"), dir.path().join("fresh"));
            let t = s.open(&tmp, true).expect("create");
            t.write_at(b"tmp", 0).expect("write");
            t.sync_data().expect("sync");
            s.rename(&new, &old).expect("rename");
            s.rename(&tmp, &fresh).expect("rename");
            s.pull_plug(mode, seed).expect("cut");
            s.power_on();
            let state = (content(&s, &old), content(&s, &new));
            let done = (Some(b"new".to_vec()), None);
            let undone = (Some(b"old".to_vec()), Some(b"new".to_vec()));
            assert!(
                state == done || state == undone,
                "seed {seed} {mode:?}: {state:?}"
            );
            let names = (content(&s, &tmp).is_some(), content(&s, &fresh).is_some());
            assert_ne!(names, (true, true), "seed {seed} {mode:?}: both names");
            if names.1 {
                assert_eq!(content(&s, &fresh).expect("fresh"), b"tmp");
                assert!(state == done, "seed {seed} {mode:?}: journal order");
            }
            outcomes.insert(state == done);
        }
    }
    assert_eq!(outcomes.len(), 2, "both outcomes occur");
}
