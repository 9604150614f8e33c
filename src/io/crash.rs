//! io::crash: the crash-simulating [`Storage`] for tests (docs/CONVENTIONS.md rule 7). File
//! contents live in memory; the directory tree is mirrored as empty files under a real root
//! directory, because the log lists directories and checks existence through `std::fs` (see
//! [`Storage`]).
//!
//! The model, per file (an inode): the *current* bytes (what reads see), the *durable* bytes (as
//! of its last `sync_data`), and the ordered writes and `set_len`s since then. Per directory
//! entry: creations, removals and renames are *pending* until `sync_dir` of their parent makes
//! them durable; pending entry changes form one ordered journal (as ext4/xfs commit metadata in
//! order). A rename is one journal entry, so a cut leaves it whole or not at all (POSIX: `to`
//! names the old or the new file, never nothing); handles keep their inode across it.
//!
//! [`CrashStorage::pull_plug`] turns that into the state a power cut could leave, drawn from a
//! seeded RNG ([`CutMode`] says how), mirrors it onto the root, and kills every handle opened
//! before: their writes, syncs and reads fail for good, as on a dead machine, and new calls fail
//! until [`CrashStorage::power_on`]. [`CrashStorage::pull_plug_after`] arms the cut at a count of
//! mutating calls instead, so it lands inside whatever the log was doing (an append, a roll, a
//! retention pass, a recovery).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FileRef, Storage, StorageFile};

/// How a power cut treats what was not yet durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CutMode {
    /// Every unsynced byte and every unsynced directory change is lost.
    DropUnsynced,
    /// Per file, a random prefix of its unsynced writes reached the disk, the last of them cut at
    /// a random byte (a disk that wrote some sectors); a random prefix of the directory journal
    /// was committed.
    KeepPrefix,
    /// Per file, every unsynced write but the last reached the disk, and the last is torn: its
    /// full length exists but from a random byte on it holds zeros or garbage (size updated,
    /// data not). A random prefix of the directory journal was committed.
    TearLast,
    /// Per file, the page cache wrote back in any order: each sector holds either its durable
    /// bytes or its latest ones, drawn independently, and the size is the durable or the latest
    /// one (sectors past the durable end that were not written back read as zeros). A random
    /// prefix of the directory journal was committed.
    Scramble,
}

/// The unit a disk writes whole (a torn sector is [`CutMode::TearLast`]'s business).
const SECTOR_BYTES: usize = 512;

impl CutMode {
    pub(crate) const ALL: [CutMode; 4] = [
        CutMode::DropUnsynced,
        CutMode::KeepPrefix,
        CutMode::TearLast,
        CutMode::Scramble,
    ];
}

/// xorshift64*: small, seeded, reproducible; no dependency for a test RNG.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> XorShift {
        // Zero is xorshift's one fixed point; splitmix the seed so nearby seeds diverge at once.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        XorShift((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub(crate) fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// A change to a file's bytes not yet made durable by `sync_data`.
#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl DataOp {
    fn apply(&self, buf: &mut Vec<u8>) {
        match self {
            DataOp::Write { offset, bytes } => write_into(buf, *offset, bytes),
            DataOp::SetLen(len) => buf.resize(*len as usize, 0),
        }
    }
}

/// Writes `bytes` at `offset`, extending with zeros first when `offset` is past the end.
fn write_into(buf: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = offset as usize;
    let end = start + bytes.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(bytes);
}

#[derive(Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<DataOp>,
}

impl Inode {
    fn settled(bytes: Vec<u8>) -> Inode {
        Inode {
            durable: bytes.clone(),
            current: bytes,
            pending: Vec::new(),
        }
    }

    /// The bytes a power cut leaves in this file under `mode`.
    fn after_cut(&self, mode: CutMode, rng: &mut XorShift) -> Vec<u8> {
        let mut out = self.durable.clone();
        let n = self.pending.len();
        match mode {
            CutMode::DropUnsynced => {}
            CutMode::KeepPrefix => {
                let kept = rng.below(n as u64 + 1) as usize;
                self.pending[..kept]
                    .iter()
                    .for_each(|op| op.apply(&mut out));
                if let Some(DataOp::Write { offset, bytes }) = self.pending.get(kept) {
                    let part = rng.below(bytes.len() as u64) as usize;
                    if part > 0 {
                        write_into(&mut out, *offset, &bytes[..part]);
                    }
                }
            }
            CutMode::TearLast => {
                let Some((last, before)) = self.pending.split_last() else {
                    return out;
                };
                before.iter().for_each(|op| op.apply(&mut out));
                if let DataOp::Write { offset, bytes } = last {
                    let mut torn = bytes.clone();
                    let from = rng.below(bytes.len() as u64) as usize;
                    let garbage = rng.coin();
                    for b in &mut torn[from..] {
                        *b = if garbage { rng.next_u64() as u8 } else { 0 };
                    }
                    write_into(&mut out, *offset, &torn);
                }
            }
            CutMode::Scramble if n > 0 => {
                let latest = &self.current;
                let len = if rng.coin() { latest.len() } else { out.len() };
                out.resize(len, 0);
                for (i, sector) in out.chunks_mut(SECTOR_BYTES).enumerate() {
                    let start = i * SECTOR_BYTES;
                    let end = (start + sector.len()).min(latest.len());
                    if start < end && rng.coin() {
                        sector[..end - start].copy_from_slice(&latest[start..end]);
                    }
                }
            }
            CutMode::Scramble => {}
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(usize),
}

/// A directory entry change, pending until its parent is synced.
#[derive(Debug, Clone)]
enum DirOp {
    Link(PathBuf, Node),
    /// Removes the entry and, for a directory, everything under it.
    Unlink(PathBuf),
    /// Moves `from` (and, for a directory, everything under it) to `to`, replacing what `to`
    /// named. `node` is what `from` named when renamed, for a tree where `from` is not yet
    /// durable (a rename committed by syncing the target's directory only).
    Rename {
        from: PathBuf,
        to: PathBuf,
        node: Node,
    },
}

impl DirOp {
    /// Whether syncing directory `dir` makes this change durable. A rename is committed by a
    /// sync of either directory it touches (one journal transaction, as on ext4).
    fn synced_by(&self, dir: &Path) -> bool {
        match self {
            DirOp::Link(p, _) | DirOp::Unlink(p) => p.parent() == Some(dir),
            DirOp::Rename { from, to, .. } => {
                from.parent() == Some(dir) || to.parent() == Some(dir)
            }
        }
    }

    fn apply(&self, tree: &mut BTreeMap<PathBuf, Node>) {
        match self {
            DirOp::Link(p, node) => {
                tree.insert(p.clone(), *node);
            }
            DirOp::Unlink(p) => tree.retain(|q, _| !q.starts_with(p)),
            DirOp::Rename { from, to, node } => {
                let moved: Vec<(PathBuf, Node)> = tree
                    .iter()
                    .filter(|(q, _)| q.starts_with(from) && *q != from)
                    .filter_map(|(q, n)| Some((to.join(q.strip_prefix(from).ok()?), *n)))
                    .collect();
                tree.retain(|q, _| !q.starts_with(from) && !q.starts_with(to));
                tree.insert(to.clone(), *node);
                tree.extend(moved);
            }
        }
    }
}

/// A cut armed to happen when the mutating call count reaches `at_op`.
#[derive(Debug, Clone, Copy)]
struct Armed {
    at_op: u64,
    mode: CutMode,
    seed: u64,
}

#[derive(Debug)]
struct State {
    root: PathBuf,
    inodes: Vec<Inode>,
    /// Entries under `root` (not `root` itself) as the running system sees them.
    tree: BTreeMap<PathBuf, Node>,
    /// Entries whose creation or removal is durable.
    durable_tree: BTreeMap<PathBuf, Node>,
    /// Entry changes since their parent's last sync, in call order.
    journal: Vec<DirOp>,
    /// Bumped by every cut; handles from an older generation are dead.
    generation: u64,
    powered: bool,
    ops: u64,
    armed: Option<Armed>,
    /// The call an armed cut replaced, for tests to tally where cuts land.
    cut_call: Option<&'static str>,
}

fn power_off() -> std::io::Error {
    std::io::Error::other("simulated power cut: the machine is off")
}

fn not_found(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
}

impl State {
    /// Checks the machine is up (and `generation` current, for a file handle), counts one
    /// mutating call, and fires an armed cut instead of letting the call happen.
    fn begin(&mut self, generation: Option<u64>, call: &'static str) -> std::io::Result<()> {
        self.check_alive(generation)?;
        if let Some(armed) = self.armed
            && self.ops >= armed.at_op
        {
            self.cut(armed.mode, armed.seed)?;
            self.cut_call = Some(call);
            return Err(power_off());
        }
        self.ops += 1;
        Ok(())
    }

    fn check_alive(&self, generation: Option<u64>) -> std::io::Result<()> {
        if !self.powered || generation.is_some_and(|g| g != self.generation) {
            return Err(power_off());
        }
        Ok(())
    }

    /// `path` strictly under the root, or an error (the backend models nothing else).
    fn inside(&self, path: &Path) -> std::io::Result<()> {
        if path.starts_with(&self.root) && path != self.root {
            return Ok(());
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is outside the crash root {}",
                path.display(),
                self.root.display()
            ),
        ))
    }

    fn is_dir(&self, path: &Path) -> bool {
        path == self.root || self.tree.get(path) == Some(&Node::Dir)
    }

    /// The errors rename(2) gives for what `to` names: a file may not replace a directory, a
    /// directory may replace only an empty directory, and never one inside itself.
    fn check_rename_target(&self, from: &Path, to: &Path, node: Node) -> std::io::Result<()> {
        let err = |kind, what: &str| {
            Err(std::io::Error::new(
                kind,
                format!("rename {} to {}: {what}", from.display(), to.display()),
            ))
        };
        match (node, self.tree.get(to)) {
            (Node::File(_), Some(Node::Dir)) => {
                err(std::io::ErrorKind::IsADirectory, "target is a directory")
            }
            (Node::Dir, Some(Node::File(_))) => {
                err(std::io::ErrorKind::NotADirectory, "target is a file")
            }
            (Node::Dir, _) if to.starts_with(from) => {
                err(std::io::ErrorKind::InvalidInput, "target inside source")
            }
            (Node::Dir, Some(Node::Dir))
                if self.tree.keys().any(|q| q.starts_with(to) && q != to) =>
            {
                err(std::io::ErrorKind::DirectoryNotEmpty, "target not empty")
            }
            _ => Ok(()),
        }
    }

    fn change(&mut self, op: DirOp) -> std::io::Result<()> {
        mirror(&op)?;
        op.apply(&mut self.tree);
        self.journal.push(op);
        Ok(())
    }

    fn inode(&mut self, ino: usize) -> &mut Inode {
        &mut self.inodes[ino]
    }

    /// Replaces the state with what a power cut under `mode` leaves, and turns the power off.
    fn cut(&mut self, mode: CutMode, seed: u64) -> std::io::Result<()> {
        let mut rng = XorShift::new(seed);
        let mut tree = self.durable_tree.clone();
        let committed = match mode {
            CutMode::DropUnsynced => 0,
            _ => rng.below(self.journal.len() as u64 + 1) as usize,
        };
        self.journal[..committed]
            .iter()
            .for_each(|op| op.apply(&mut tree));
        // An entry whose directory did not survive is gone with it.
        let root = self.root.clone();
        let snapshot = tree.clone();
        tree.retain(|p, _| {
            p.ancestors()
                .skip(1)
                .take_while(|a| *a != root)
                .all(|a| snapshot.get(a) == Some(&Node::Dir))
        });
        // BTreeMap order: the same state and seed give the same draws.
        let mut inodes = Vec::new();
        for node in tree.values_mut() {
            if let Node::File(ino) = node {
                inodes.push(Inode::settled(self.inodes[*ino].after_cut(mode, &mut rng)));
                *node = Node::File(inodes.len() - 1);
            }
        }
        self.inodes = inodes;
        let before = std::mem::replace(&mut self.tree, tree.clone());
        self.durable_tree = tree;
        self.journal.clear();
        self.generation += 1;
        self.powered = false;
        self.armed = None;
        self.remirror(&before)
    }

    /// Brings the real root from mirroring `before` to mirroring the tree: removals first, then
    /// creations (parents sort before their children in both).
    fn remirror(&self, before: &BTreeMap<PathBuf, Node>) -> std::io::Result<()> {
        for (path, node) in before {
            let same = self
                .tree
                .get(path)
                .map(|n| matches!(n, Node::Dir) == (*node == Node::Dir));
            if same != Some(true) && path.exists() {
                mirror(&DirOp::Unlink(path.clone()))?;
            }
        }
        for (path, node) in &self.tree {
            if !path.exists() {
                mirror(&DirOp::Link(path.clone(), *node))?;
            }
        }
        Ok(())
    }
}

/// Applies an entry change to the real directory tree (names only; contents stay in memory).
fn mirror(op: &DirOp) -> std::io::Result<()> {
    match op {
        DirOp::Link(p, Node::Dir) => std::fs::create_dir(p),
        DirOp::Link(p, Node::File(_)) => std::fs::File::create(p).map(drop),
        DirOp::Unlink(p) if p.is_dir() => std::fs::remove_dir_all(p),
        DirOp::Unlink(p) => std::fs::remove_file(p),
        DirOp::Rename { from, to, .. } => std::fs::rename(from, to),
    }
}

/// The crash-simulating backend. Clones share one state, so a test keeps a clone to pull the
/// plug on the one the disk writer holds.
#[derive(Debug, Clone)]
pub(crate) struct CrashStorage {
    state: Arc<Mutex<State>>,
}

impl CrashStorage {
    /// A backend over the existing, empty real directory `root` (which is always durable).
    pub(crate) fn new(root: &Path) -> CrashStorage {
        let state = State {
            root: root.to_path_buf(),
            inodes: Vec::new(),
            tree: BTreeMap::new(),
            durable_tree: BTreeMap::new(),
            journal: Vec::new(),
            generation: 0,
            powered: true,
            ops: 0,
            armed: None,
            cut_call: None,
        };
        CrashStorage {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the power now (a no-op if it is already off).
    pub(crate) fn pull_plug(&self, mode: CutMode, seed: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        if !state.powered {
            return Ok(());
        }
        state.cut(mode, seed)
    }

    /// Cuts the power instead of performing the mutating call numbered `ops` (counted from the
    /// start; see [`CrashStorage::ops`]). 0 cuts at the next call.
    pub(crate) fn pull_plug_after(&self, ops: u64, mode: CutMode, seed: u64) {
        let mut state = self.lock();
        let at_op = state.ops + ops;
        state.armed = Some(Armed { at_op, mode, seed });
        state.cut_call = None;
    }

    /// Cancels an armed cut that has not fired.
    pub(crate) fn disarm(&self) {
        self.lock().armed = None;
    }

    /// Whether the power is off (a cut happened and `power_on` was not called since).
    pub(crate) fn is_off(&self) -> bool {
        !self.lock().powered
    }

    /// Boots the machine again: new handles work, handles from before the cut stay dead. Call
    /// once everything that used the old handles has stopped.
    pub(crate) fn power_on(&self) {
        self.lock().powered = true;
    }

    /// The mutating call the last armed cut fired at instead of performing ("write_at",
    /// "sync_data", "set_len", "create", "remove_file", "create_dir", "remove_dir_all",
    /// "rename", "sync_dir"); None if the last armed cut has not fired.
    pub(crate) fn cut_call(&self) -> Option<&'static str> {
        self.lock().cut_call
    }

    /// Mutating calls performed so far (writes, set_len, syncs, creations, removals, renames).
    pub(crate) fn ops(&self) -> u64 {
        self.lock().ops
    }
}

#[derive(Debug)]
struct CrashFile {
    path: PathBuf,
    ino: usize,
    generation: u64,
    state: Arc<Mutex<State>>,
}

impl CrashFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StorageFile for CrashFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        state.begin(Some(self.generation), "write_at")?;
        let inode = state.inode(self.ino);
        write_into(&mut inode.current, offset, buf);
        inode.pending.push(DataOp::Write {
            offset,
            bytes: buf.to_vec(),
        });
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        state.check_alive(Some(self.generation))?;
        let current = &state.inode(self.ino).current;
        let end = offset.checked_add(buf.len() as u64);
        match end {
            Some(end) if end <= current.len() as u64 => {
                buf.copy_from_slice(&current[offset as usize..end as usize]);
                Ok(())
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("read past the end of {}", self.path.display()),
            )),
        }
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        state.begin(Some(self.generation), "sync_data")?;
        let inode = state.inode(self.ino);
        inode.durable = inode.current.clone();
        inode.pending.clear();
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        state.begin(Some(self.generation), "set_len")?;
        let inode = state.inode(self.ino);
        let op = DataOp::SetLen(len);
        op.apply(&mut inode.current);
        inode.pending.push(op);
        Ok(())
    }

    fn len(&self) -> std::io::Result<u64> {
        let mut state = self.lock();
        state.check_alive(Some(self.generation))?;
        Ok(state.inode(self.ino).current.len() as u64)
    }
}

impl Storage for CrashStorage {
    fn open(&self, path: &Path, create: bool) -> std::io::Result<FileRef> {
        let mut state = self.lock();
        state.check_alive(None)?;
        state.inside(path)?;
        let ino = match state.tree.get(path) {
            Some(Node::File(ino)) => *ino,
            Some(Node::Dir) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    format!("{} is a directory", path.display()),
                ));
            }
            None if !create => return Err(not_found(path)),
            None => {
                let parent = path.parent().unwrap_or(path);
                if !state.is_dir(parent) {
                    return Err(not_found(parent));
                }
                state.begin(None, "create")?;
                state.inodes.push(Inode::default());
                let ino = state.inodes.len() - 1;
                state.change(DirOp::Link(path.to_path_buf(), Node::File(ino)))?;
                ino
            }
        };
        Ok(Arc::new(CrashFile {
            path: path.to_path_buf(),
            ino,
            generation: state.generation,
            state: self.state.clone(),
        }))
    }

    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        state.check_alive(None)?;
        state.inside(path)?;
        match state.tree.get(path) {
            Some(Node::File(_)) => {
                state.begin(None, "remove_file")?;
                state.change(DirOp::Unlink(path.to_path_buf()))
            }
            Some(Node::Dir) => Err(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            )),
            None => Err(not_found(path)),
        }
    }

    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        state.check_alive(None)?;
        if path == state.root {
            return Ok(());
        }
        state.inside(path)?;
        let root = state.root.clone();
        let mut missing: Vec<&Path> = path.ancestors().take_while(|a| *a != root).collect();
        missing.reverse();
        for dir in missing {
            match state.tree.get(dir) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotADirectory,
                        format!("{} is a file", dir.display()),
                    ));
                }
                None => {
                    state.begin(None, "create_dir")?;
                    state.change(DirOp::Link(dir.to_path_buf(), Node::Dir))?;
                }
            }
        }
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        state.check_alive(None)?;
        state.inside(path)?;
        if state.tree.get(path) != Some(&Node::Dir) {
            return Err(not_found(path));
        }
        state.begin(None, "remove_dir_all")?;
        state.change(DirOp::Unlink(path.to_path_buf()))
    }

    /// POSIX rename as one pending directory change (see the module doc): `to` is replaced at
    /// once, open handles of the old `to` keep its bytes, handles of `from` keep working, and a
    /// cut before `sync_dir` of the directory may leave the names as they were.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        state.check_alive(None)?;
        state.inside(from)?;
        state.inside(to)?;
        let Some(&node) = state.tree.get(from) else {
            return Err(not_found(from));
        };
        let parent = to.parent().unwrap_or(to);
        if !state.is_dir(parent) {
            return Err(not_found(parent));
        }
        if from == to {
            return Ok(());
        }
        state.check_rename_target(from, to, node)?;
        state.begin(None, "rename")?;
        state.change(DirOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            node,
        })
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        state.check_alive(None)?;
        if !dir.starts_with(&state.root) {
            return Ok(()); // Above the root: real directories, durable already.
        }
        if !state.is_dir(dir) {
            return Err(not_found(dir));
        }
        state.begin(None, "sync_dir")?;
        let (synced, rest): (Vec<DirOp>, Vec<DirOp>) = std::mem::take(&mut state.journal)
            .into_iter()
            .partition(|op| op.synced_by(dir));
        synced
            .iter()
            .for_each(|op| op.apply(&mut state.durable_tree));
        state.journal = rest;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
