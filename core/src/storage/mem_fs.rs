//! An in-memory file system with crash semantics and fault injection, for unit tests, property
//! tests and fuzzing of the storage engine (the simulator uses turmoil's file system instead).
//!
//! Crash model (what [`MemFs::crash`] keeps):
//! - every file's content is what its last successful sync made durable, plus a random subset of
//!   the writes and size changes made since, each kept whole, lost, or (with
//!   `torn_block_bytes`) cut after a random number of blocks counted from the write's start —
//!   later writes may survive while earlier ones are lost (disks reorder);
//! - directory entries are what the last `sync_dir` of their directory made durable: a new file
//!   whose directory was not synced disappears, a removed one comes back, an unsynced rename is
//!   undone;
//! - handles opened before a crash fail on every use afterwards.
//!
//! Faults (switched at any time through [`MemFsFaults`]): EIO on any operation with a given
//! probability, ENOSPC on writes, silently corrupted reads, and a power cut after a given number
//! of operations (every later operation fails, as if the machine had died; call `crash` next).
//!
//! One check beyond the model: a file synced while the removal (or rename) of an earlier file
//! of its name is not yet durable is listed ([`MemFs::synced_under_pending_removal`]). This
//! model, like POSIX, handles that sequence; a model that keeps file data by name (turmoil's)
//! loses the synced data, so the storage engine avoids it (`removal.rs`) and the tests check
//! that it does.
//!
//! Deterministic: all randomness comes from a seeded ChaCha generator; only ordered maps.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::fs::{DirEntry, EntryKind, FileSystem, FsFile, OpenMode};

/// Limits the in-memory disk so a runaway test fails instead of exhausting memory.
const MAX_FILE_BYTES: u64 = 1 << 30;

#[derive(Clone, Debug, Default)]
pub struct MemFsConfig {
    /// When set, a crash may keep a prefix of an unsynced write cut at a multiple of this many
    /// bytes from the write's start; otherwise each unsynced write survives whole or not at all.
    pub torn_block_bytes: Option<u64>,
    /// Total bytes the disk holds (ENOSPC beyond); `None` is unlimited (up to an internal cap).
    pub capacity_bytes: Option<u64>,
}

#[derive(Clone)]
pub struct MemFs {
    state: Rc<RefCell<State>>,
    faults: MemFsFaults,
}

/// Fault switches of one [`MemFs`]; cheap to clone, shared.
#[derive(Clone, Debug, Default)]
pub struct MemFsFaults {
    inner: Rc<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    io_error_permille: Cell<u32>,
    no_space: Cell<bool>,
    corrupt_read_permille: Cell<u32>,
    /// Operations left before the power cut; `None` means no cut is armed.
    ops_before_power_cut: Cell<Option<u64>>,
    /// Operations left before the disk fills up (`no_space` turns on); `None`: not armed.
    ops_before_no_space: Cell<Option<u64>>,
    powered_off: Cell<bool>,
    injected: Cell<u64>,
}

impl MemFsFaults {
    pub fn set_io_error_permille(&self, permille: u32) {
        self.inner.io_error_permille.set(permille.min(1000));
    }
    pub fn set_no_space(&self, full: bool) {
        self.inner.no_space.set(full);
    }
    pub fn set_corrupt_read_permille(&self, permille: u32) {
        self.inner.corrupt_read_permille.set(permille.min(1000));
    }
    /// After `ops` more operations succeed, every operation fails until [`MemFs::crash`].
    pub fn power_cut_after_ops(&self, ops: u64) {
        self.inner.ops_before_power_cut.set(Some(ops));
    }
    /// After `ops` more operations, the disk is full (as `set_no_space(true)`): a test can
    /// make each operation of a sequence in turn the first to find no room.
    pub fn no_space_after_ops(&self, ops: u64) {
        self.inner.ops_before_no_space.set(Some(ops));
    }
    pub fn heal(&self) {
        self.inner.io_error_permille.set(0);
        self.inner.no_space.set(false);
        self.inner.corrupt_read_permille.set(0);
        self.inner.ops_before_power_cut.set(None);
        self.inner.ops_before_no_space.set(None);
    }
    pub fn is_powered_off(&self) -> bool {
        self.inner.powered_off.get()
    }
    /// How many faults hit an operation so far.
    pub fn injected(&self) -> u64 {
        self.inner.injected.get()
    }
}

#[derive(Clone, Debug)]
enum Node {
    File(u64),
    Directory,
}

#[derive(Clone, Debug)]
enum Change {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Changes made to `live` since the last sync, oldest first.
    unsynced: Vec<Change>,
}

/// Directory path -> its entries by name.
type Directories = BTreeMap<PathBuf, BTreeMap<String, Node>>;

struct State {
    config: MemFsConfig,
    rng: ChaCha8Rng,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    live: Directories,
    durable: Directories,
    /// Bumped by every crash; handles of an older epoch are dead.
    epoch: u64,
    ops: u64,
    /// File syncs (`sync_data`, `sync_all`) that succeeded.
    file_syncs: u64,
    /// Names removed or renamed away since their directory's last sync.
    pending_removals: BTreeSet<PathBuf>,
    /// Files synced while a removal of their name was pending.
    synced_under_pending_removal: Vec<PathBuf>,
}

fn root() -> PathBuf {
    PathBuf::from("/")
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let parent = path.parent().ok_or_else(|| invalid(path, "no parent directory"))?;
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| invalid(path, "no valid file name"))?;
    Ok((parent.to_path_buf(), name.to_owned()))
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {what}", path.display()))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

fn apply(content: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[start..end].copy_from_slice(data);
        }
        Change::SetLen(len) => content.resize(*len as usize, 0),
    }
}

impl MemFs {
    pub fn new(seed: u64, config: MemFsConfig) -> MemFs {
        let mut directories = Directories::new();
        directories.insert(root(), BTreeMap::new());
        MemFs {
            state: Rc::new(RefCell::new(State {
                config,
                rng: ChaCha8Rng::seed_from_u64(seed),
                inodes: BTreeMap::new(),
                next_inode: 1,
                live: directories.clone(),
                durable: directories,
                epoch: 0,
                ops: 0,
                file_syncs: 0,
                pending_removals: BTreeSet::new(),
                synced_under_pending_removal: Vec::new(),
            })),
            faults: MemFsFaults::default(),
        }
    }

    /// A file system whose durable content is exactly `files` (path -> bytes); parent
    /// directories are created as needed. Used by fuzzing and by tests that build damaged disks.
    pub fn from_image(seed: u64, config: MemFsConfig, files: &BTreeMap<PathBuf, Vec<u8>>) -> MemFs {
        let fs = MemFs::new(seed, config);
        for (path, content) in files {
            fs.put_durable_file(path, content.clone());
        }
        fs
    }

    pub fn faults(&self) -> MemFsFaults {
        self.faults.clone()
    }

    /// Operations performed so far (to choose power-cut points).
    pub fn ops(&self) -> u64 {
        self.state.borrow().ops
    }

    /// File syncs that succeeded so far (what a group commit costs).
    pub fn file_syncs(&self) -> u64 {
        self.state.borrow().file_syncs
    }

    /// The machine loses power and comes back: only durable state remains (see the module
    /// docs), every open handle dies, the power cut (if any) is cleared.
    pub fn crash(&self) {
        let mut guard = self.state.borrow_mut();
        let state = &mut *guard;
        state.epoch += 1;
        state.pending_removals.clear();
        let torn_block_bytes = state.config.torn_block_bytes;
        for inode in state.inodes.values_mut() {
            let mut content = std::mem::take(&mut inode.durable);
            for change in std::mem::take(&mut inode.unsynced) {
                match (&change, torn_block_bytes) {
                    (Change::Write { offset, data }, Some(block)) => {
                        let blocks = (data.len() as u64).div_ceil(block);
                        let kept_blocks = state.rng.random_range(0..=blocks);
                        let kept = ((kept_blocks * block) as usize).min(data.len());
                        if kept > 0 {
                            let partial =
                                Change::Write { offset: *offset, data: data[..kept].to_vec() };
                            apply(&mut content, &partial);
                        }
                    }
                    _ => {
                        if state.rng.random_bool(0.5) {
                            apply(&mut content, &change);
                        }
                    }
                }
            }
            inode.live = content.clone();
            inode.durable = content;
        }
        // Directory entries: only what was synced, and only directories reachable from the root.
        let mut reachable = Directories::new();
        let mut stack = vec![root()];
        while let Some(dir) = stack.pop() {
            let entries = state.durable.get(&dir).cloned().unwrap_or_default();
            for (name, node) in &entries {
                if matches!(node, Node::Directory) {
                    stack.push(dir.join(name));
                }
            }
            reachable.insert(dir, entries);
        }
        state.durable = reachable.clone();
        state.live = reachable;
        let referenced: Vec<u64> = state
            .live
            .values()
            .flat_map(|entries| entries.values())
            .filter_map(|node| match node {
                Node::File(inode) => Some(*inode),
                Node::Directory => None,
            })
            .collect();
        state.inodes.retain(|inode, _| referenced.contains(inode));
        drop(guard);
        self.faults.inner.powered_off.set(false);
        self.faults.inner.ops_before_power_cut.set(None);
    }

    /// Every file (by the path it was opened under) that was synced while the removal or
    /// rename of an earlier file of its name was not yet durable; each at most once, across
    /// crashes. The storage engine never does this (`removal.rs`).
    pub fn synced_under_pending_removal(&self) -> Vec<PathBuf> {
        self.state.borrow().synced_under_pending_removal.clone()
    }

    /// The current (live) content of every file, by path.
    pub fn image(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let state = self.state.borrow();
        let mut out = BTreeMap::new();
        for (dir, entries) in &state.live {
            for (name, node) in entries {
                if let Node::File(inode) = node {
                    let content =
                        state.inodes.get(inode).map(|i| i.live.clone()).unwrap_or_default();
                    out.insert(dir.join(name), content);
                }
            }
        }
        out
    }

    /// Replaces a file's content durably, bypassing faults (tests use it to damage a disk).
    pub fn put_durable_file(&self, path: &Path, content: Vec<u8>) {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
        ancestors.reverse();
        for dir in ancestors {
            if dir.as_os_str().is_empty() || dir == Path::new("/") {
                continue;
            }
            if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
                let name = name.to_string_lossy().into_owned();
                for dirs in [&mut state.live, &mut state.durable] {
                    dirs.entry(parent.to_path_buf())
                        .or_default()
                        .insert(name.clone(), Node::Directory);
                    dirs.entry(dir.to_path_buf()).or_default();
                }
            }
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return };
        let name = name.to_string_lossy().into_owned();
        let existing = match state.live.get(parent).and_then(|entries| entries.get(&name)) {
            Some(Node::File(inode)) => Some(*inode),
            _ => None,
        };
        let inode = existing.unwrap_or_else(|| {
            let inode = state.next_inode;
            state.next_inode += 1;
            inode
        });
        state
            .inodes
            .insert(inode, Inode { live: content.clone(), durable: content, unsynced: Vec::new() });
        for dirs in [&mut state.live, &mut state.durable] {
            dirs.entry(parent.to_path_buf()).or_default().insert(name.clone(), Node::File(inode));
        }
    }

    /// Removes a file durably, bypassing faults.
    pub fn remove_durable_file(&self, path: &Path) {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return };
        let name = name.to_string_lossy().into_owned();
        for dirs in [&mut state.live, &mut state.durable] {
            if let Some(entries) = dirs.get_mut(parent) {
                entries.remove(&name);
            }
        }
    }

    /// Counts the operation and decides whether a fault hits it. `writes` marks operations that
    /// allocate space (ENOSPC applies).
    fn begin(&self, writes: bool) -> io::Result<()> {
        let faults = &self.faults.inner;
        if faults.powered_off.get() {
            return Err(io::Error::other("power cut: the machine is off"));
        }
        if let Some(left) = faults.ops_before_power_cut.get() {
            if left == 0 {
                faults.powered_off.set(true);
                return Err(io::Error::other("power cut: the machine is off"));
            }
            faults.ops_before_power_cut.set(Some(left - 1));
        }
        match faults.ops_before_no_space.get() {
            Some(0) => {
                faults.no_space.set(true);
                faults.ops_before_no_space.set(None);
            }
            Some(left) => faults.ops_before_no_space.set(Some(left - 1)),
            None => {}
        }
        let mut state = self.state.borrow_mut();
        state.ops += 1;
        let permille = faults.io_error_permille.get();
        if permille > 0 && state.rng.random_range(0..1000) < permille {
            faults.injected.set(faults.injected.get() + 1);
            return Err(io::Error::other("injected EIO (input/output error)"));
        }
        if writes && faults.no_space.get() {
            faults.injected.set(faults.injected.get() + 1);
            return Err(io::Error::new(io::ErrorKind::StorageFull, "injected ENOSPC"));
        }
        Ok(())
    }

    fn lookup(state: &State, path: &Path) -> Option<Node> {
        if path == Path::new("/") {
            return Some(Node::Directory);
        }
        let (parent, name) = split(path).ok()?;
        state.live.get(&parent)?.get(&name).cloned()
    }

    fn used_bytes(state: &State) -> u64 {
        state.inodes.values().map(|inode| inode.live.len().max(inode.durable.len()) as u64).sum()
    }

    fn check_space(&self, state: &State, growth: u64) -> io::Result<()> {
        let limit = state.config.capacity_bytes.unwrap_or(u64::MAX);
        if Self::used_bytes(state).saturating_add(growth) > limit {
            self.faults.inner.injected.set(self.faults.inner.injected.get() + 1);
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"));
        }
        Ok(())
    }
}

/// An open file of a [`MemFs`].
pub struct MemFile {
    fs: MemFs,
    inode: u64,
    epoch: u64,
    writable: bool,
    path: PathBuf,
}

impl MemFile {
    fn check_alive(&self) -> io::Result<()> {
        if self.fs.state.borrow().epoch != self.epoch {
            return Err(io::Error::other(format!(
                "{}: handle from before a crash",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn with_inode<R>(&self, f: impl FnOnce(&mut Inode) -> R) -> io::Result<R> {
        let mut state = self.fs.state.borrow_mut();
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| not_found(&self.path))?;
        Ok(f(inode))
    }

    fn sync(&self) -> io::Result<()> {
        self.fs.begin(false)?;
        self.check_alive()?;
        self.note_pending_removal_of_name();
        self.with_inode(|inode| {
            for change in std::mem::take(&mut inode.unsynced) {
                apply(&mut inode.durable, &change);
            }
        })?;
        self.fs.state.borrow_mut().file_syncs += 1;
        Ok(())
    }

    /// Lists this file if it still has its name and a removal of that name is pending.
    fn note_pending_removal_of_name(&self) {
        let mut state = self.fs.state.borrow_mut();
        let named = matches!(MemFs::lookup(&state, &self.path), Some(Node::File(inode)) if inode == self.inode);
        if named
            && state.pending_removals.contains(&self.path)
            && !state.synced_under_pending_removal.contains(&self.path)
        {
            state.synced_under_pending_removal.push(self.path.clone());
        }
    }
}

impl FsFile for MemFile {
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.fs.begin(false)?;
        self.check_alive()?;
        let mut data = self.with_inode(|inode| {
            let start = (offset as usize).min(inode.live.len());
            let end = start.saturating_add(len).min(inode.live.len());
            inode.live[start..end].to_vec()
        })?;
        let permille = self.fs.faults.inner.corrupt_read_permille.get();
        if permille > 0 && !data.is_empty() {
            let mut state = self.fs.state.borrow_mut();
            if state.rng.random_range(0..1000) < permille {
                let at = state.rng.random_range(0..data.len());
                let mask: u8 = state.rng.random_range(1..=255);
                data[at] ^= mask;
                self.fs.faults.inner.injected.set(self.fs.faults.inner.injected.get() + 1);
            }
        }
        Ok(data)
    }

    async fn write_all_at(&self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        self.fs.begin(true)?;
        self.check_alive()?;
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "opened read-only"));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > MAX_FILE_BYTES {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "file too large"));
        }
        let current = self.with_inode(|inode| inode.live.len() as u64)?;
        {
            let state = self.fs.state.borrow();
            self.fs.check_space(&state, end.saturating_sub(current))?;
        }
        self.with_inode(|inode| {
            let change = Change::Write { offset, data };
            apply(&mut inode.live, &change);
            inode.unsynced.push(change);
        })
    }

    async fn len_bytes(&self) -> io::Result<u64> {
        self.fs.begin(false)?;
        self.check_alive()?;
        self.with_inode(|inode| inode.live.len() as u64)
    }

    async fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.fs.begin(true)?;
        self.check_alive()?;
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "opened read-only"));
        }
        if len_bytes > MAX_FILE_BYTES {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "file too large"));
        }
        let current = self.with_inode(|inode| inode.live.len() as u64)?;
        {
            let state = self.fs.state.borrow();
            self.fs.check_space(&state, len_bytes.saturating_sub(current))?;
        }
        self.with_inode(|inode| {
            let change = Change::SetLen(len_bytes);
            apply(&mut inode.live, &change);
            inode.unsynced.push(change);
        })
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    async fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

impl FileSystem for MemFs {
    type File = MemFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<MemFile> {
        self.begin(mode == OpenMode::CreateNew)?;
        let mut state = self.state.borrow_mut();
        let epoch = state.epoch;
        let inode = match (Self::lookup(&state, path), mode) {
            (Some(Node::Directory), _) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    path.display().to_string(),
                ));
            }
            (Some(Node::File(_)), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    path.display().to_string(),
                ));
            }
            (Some(Node::File(inode)), _) => inode,
            (None, OpenMode::CreateNew) => {
                let (parent, name) = split(path)?;
                if !state.live.contains_key(&parent) {
                    return Err(not_found(&parent));
                }
                let inode = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(inode, Inode::default());
                state.live.entry(parent).or_default().insert(name, Node::File(inode));
                inode
            }
            (None, _) => return Err(not_found(path)),
        };
        Ok(MemFile {
            fs: self.clone(),
            inode,
            epoch,
            writable: mode != OpenMode::Read,
            path: path.to_path_buf(),
        })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.begin(false)?;
        let mut state = self.state.borrow_mut();
        let (from_parent, from_name) = split(from)?;
        let (to_parent, to_name) = split(to)?;
        match Self::lookup(&state, from) {
            Some(Node::File(_)) => {}
            Some(Node::Directory) => {
                return Err(invalid(from, "renaming directories is not supported"));
            }
            None => return Err(not_found(from)),
        }
        if matches!(Self::lookup(&state, to), Some(Node::Directory)) {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, to.display().to_string()));
        }
        if !state.live.contains_key(&to_parent) {
            return Err(not_found(&to_parent));
        }
        let node = state
            .live
            .get_mut(&from_parent)
            .and_then(|entries| entries.remove(&from_name))
            .ok_or_else(|| not_found(from))?;
        state.pending_removals.insert(from.to_path_buf());
        state.live.entry(to_parent).or_default().insert(to_name, node);
        Ok(())
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.begin(false)?;
        let mut state = self.state.borrow_mut();
        match Self::lookup(&state, path) {
            Some(Node::File(_)) => {}
            Some(Node::Directory) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    path.display().to_string(),
                ));
            }
            None => return Err(not_found(path)),
        }
        let (parent, name) = split(path)?;
        if let Some(entries) = state.live.get_mut(&parent) {
            entries.remove(&name);
        }
        state.pending_removals.insert(path.to_path_buf());
        Ok(())
    }

    async fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.begin(true)?;
        let mut state = self.state.borrow_mut();
        if Self::lookup(&state, path).is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, path.display().to_string()));
        }
        let (parent, name) = split(path)?;
        let entries = state.live.get_mut(&parent).ok_or_else(|| not_found(&parent))?;
        entries.insert(name, Node::Directory);
        state.live.insert(path.to_path_buf(), BTreeMap::new());
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.begin(false)?;
        let state = self.state.borrow();
        let entries = state.live.get(path).ok_or_else(|| not_found(path))?;
        Ok(entries
            .iter()
            .map(|(name, node)| DirEntry {
                name: name.clone(),
                kind: match node {
                    Node::File(_) => EntryKind::File,
                    Node::Directory => EntryKind::Directory,
                },
            })
            .collect())
    }

    async fn entry_kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        self.begin(false)?;
        let state = self.state.borrow();
        Ok(Self::lookup(&state, path).map(|node| match node {
            Node::File(_) => EntryKind::File,
            Node::Directory => EntryKind::Directory,
        }))
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.begin(false)?;
        let mut state = self.state.borrow_mut();
        let entries = state.live.get(path).cloned().ok_or_else(|| not_found(path))?;
        state.durable.insert(path.to_path_buf(), entries);
        state.pending_removals.retain(|removed| removed.parent() != Some(path));
        Ok(())
    }

    /// No time passes on this disk: a wait only gives control back once, so that a test that
    /// polls the writer sees it waiting (for space, say) and can change the disk meanwhile.
    async fn wait_ms(&self, _duration_ms: u64) {
        let mut yielded = false;
        std::future::poll_fn(|context| {
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                context.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn fs(torn_block_bytes: Option<u64>) -> MemFs {
        MemFs::new(7, MemFsConfig { torn_block_bytes, capacity_bytes: None })
    }

    fn read_all(fs: &MemFs, path: &str) -> Option<Vec<u8>> {
        fs.image().get(Path::new(path)).cloned()
    }

    #[test]
    fn synced_data_survives_and_unsynced_data_may_not() {
        let fs = fs(None);
        block_on(async {
            let file = fs.open(Path::new("/a"), OpenMode::CreateNew).await.unwrap();
            file.write_all_at(0, b"durable".to_vec()).await.unwrap();
            file.sync_data().await.unwrap();
            fs.sync_dir(Path::new("/")).await.unwrap();
            file.write_all_at(0, b"XXXXXXX".to_vec()).await.unwrap();
        });
        // Without torn writes an unsynced write survives whole or not at all.
        fs.crash();
        let content = read_all(&fs, "/a").unwrap();
        assert!(content == b"durable" || content == b"XXXXXXX", "{content:?}");
    }

    #[test]
    fn a_new_file_needs_its_directory_synced() {
        let fs = fs(None);
        block_on(async {
            let file = fs.open(Path::new("/a"), OpenMode::CreateNew).await.unwrap();
            file.write_all_at(0, b"data".to_vec()).await.unwrap();
            file.sync_all().await.unwrap();
        });
        fs.crash();
        assert_eq!(read_all(&fs, "/a"), None, "synced data, unsynced directory entry");
    }

    #[test]
    fn renames_and_removals_are_undone_unless_the_directory_is_synced() {
        let fs = fs(None);
        block_on(async {
            let file = fs.open(Path::new("/a"), OpenMode::CreateNew).await.unwrap();
            file.write_all_at(0, b"1".to_vec()).await.unwrap();
            file.sync_all().await.unwrap();
            fs.sync_dir(Path::new("/")).await.unwrap();
            fs.rename(Path::new("/a"), Path::new("/b")).await.unwrap();
        });
        fs.crash();
        assert!(read_all(&fs, "/a").is_some() && read_all(&fs, "/b").is_none());
        block_on(async {
            fs.rename(Path::new("/a"), Path::new("/b")).await.unwrap();
            fs.sync_dir(Path::new("/")).await.unwrap();
            fs.remove_file(Path::new("/b")).await.unwrap();
        });
        fs.crash();
        assert_eq!(read_all(&fs, "/b"), Some(b"1".to_vec()), "the removal was not synced");
    }

    #[test]
    fn a_file_synced_under_a_name_whose_removal_is_not_durable_is_listed() {
        let fs = fs(None);
        let root = Path::new("/");
        let (a, b) = (Path::new("/a"), Path::new("/b"));
        block_on(async {
            for path in [a, b] {
                fs.open(path, OpenMode::CreateNew).await.unwrap().sync_all().await.unwrap();
            }
            fs.sync_dir(root).await.unwrap();
            // `a` is created again before its removal is durable.
            fs.remove_file(a).await.unwrap();
            let new_a = fs.open(a, OpenMode::CreateNew).await.unwrap();
            new_a.write_all_at(0, vec![1]).await.unwrap();
            assert!(fs.synced_under_pending_removal().is_empty(), "nothing synced yet");
            new_a.sync_data().await.unwrap();
            // `b` only after.
            fs.remove_file(b).await.unwrap();
            fs.sync_dir(root).await.unwrap();
            let new_b = fs.open(b, OpenMode::CreateNew).await.unwrap();
            new_b.sync_all().await.unwrap();
        });
        assert_eq!(fs.synced_under_pending_removal(), vec![a.to_path_buf()]);
    }

    #[test]
    fn torn_writes_keep_a_block_prefix() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let fs =
                MemFs::new(seed, MemFsConfig { torn_block_bytes: Some(4), capacity_bytes: None });
            block_on(async {
                let file = fs.open(Path::new("/a"), OpenMode::CreateNew).await.unwrap();
                file.set_len(12).await.unwrap();
                file.sync_all().await.unwrap();
                fs.sync_dir(Path::new("/")).await.unwrap();
                file.write_all_at(0, b"abcdefghijkl".to_vec()).await.unwrap();
            });
            fs.crash();
            let content = read_all(&fs, "/a").unwrap();
            let kept = content.iter().take_while(|b| **b != 0).count();
            assert_eq!(kept % 4, 0, "{content:?}");
            assert_eq!(&content[..kept], &b"abcdefghijkl"[..kept]);
            seen.insert(kept);
        }
        assert_eq!(seen.len(), 4, "every cut point occurs: {seen:?}");
    }

    #[test]
    fn faults_fail_operations_and_a_power_cut_stops_everything_until_the_crash() {
        let fs = fs(None);
        let faults = fs.faults();
        block_on(async {
            let file = fs.open(Path::new("/a"), OpenMode::CreateNew).await.unwrap();
            faults.set_no_space(true);
            let error = file.write_all_at(0, vec![1]).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::StorageFull);
            faults.heal();
            faults.set_io_error_permille(1000);
            assert!(file.sync_data().await.is_err());
            faults.heal();
            file.write_all_at(0, vec![9; 64]).await.unwrap();
            faults.set_corrupt_read_permille(1000);
            assert_ne!(file.read_at(0, 64).await.unwrap(), vec![9; 64]);
            faults.heal();
            faults.power_cut_after_ops(1);
            file.read_at(0, 1).await.unwrap();
            assert!(file.read_at(0, 1).await.is_err());
            assert!(faults.is_powered_off());
        });
        assert!(faults.injected() >= 3);
        fs.crash();
        assert!(!fs.faults().is_powered_off());
        assert!(block_on(fs.list_dir(Path::new("/"))).is_ok());
    }

    #[test]
    fn handles_from_before_a_crash_are_dead() {
        let fs = fs(None);
        let file = block_on(fs.open(Path::new("/a"), OpenMode::CreateNew)).unwrap();
        block_on(fs.sync_dir(Path::new("/"))).unwrap();
        fs.crash();
        assert!(block_on(file.read_at(0, 1)).is_err());
    }
}
