//! Records spilled to disk in the order they come, then read back one group at a time.
//!
//! A history file may list its operations in any order, and which operations belong together
//! (a partition) is known only once the whole file has been read. So records are first
//! appended to one file, each tagged with an *anchor* (a key, a client) that a group will
//! contain; once every anchor's group is known, one sequential pass copies them into *window*
//! files, each holding whole consecutive groups of the final layout, about
//! [`Layout::window_bytes`] in all. A group is then read back by loading its window only: the
//! memory a group costs is its window's, however large the whole spill.
//!
//! Within a group, records keep the order they were appended in.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::varint::corrupt;

/// Bytes of a record's header: the anchor (or, in a window file, the group) and the payload's
/// length, each a little-endian `u32`.
pub(crate) const HEADER_BYTES: u64 = 8;

/// Windows are made at least `total / WINDOWS_TARGET` bytes, so that there are at most twice
/// this many window files, each open with a write buffer while regrouping.
const WINDOWS_TARGET: u64 = 64;

/// Write buffer of each window file while regrouping.
const WINDOW_BUFFER_BYTES: usize = 32 << 10;

/// Read buffer of the sequential passes.
const READ_BUFFER_BYTES: usize = 256 << 10;

/// Records appended in any order.
pub(crate) struct SpillWriter {
    out: BufWriter<File>,
    path: PathBuf,
    bytes: u64,
}

impl SpillWriter {
    pub(crate) fn create(path: PathBuf) -> io::Result<SpillWriter> {
        let out = BufWriter::with_capacity(READ_BUFFER_BYTES, File::create(&path)?);
        Ok(SpillWriter { out, path, bytes: 0 })
    }

    /// Appends a record; returns the bytes it takes (header included), which the caller adds
    /// to its group's total for [`regroup`].
    pub(crate) fn push(&mut self, anchor: u32, payload: &[u8]) -> io::Result<u64> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::other("a spilled record over 4 GiB"))?;
        self.out.write_all(&anchor.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(payload)?;
        let bytes = HEADER_BYTES + u64::from(len);
        self.bytes += bytes;
        Ok(bytes)
    }

    pub(crate) fn finish(self) -> io::Result<Spill> {
        let file = self.out.into_inner().map_err(|error| error.into_error())?;
        drop(file);
        Ok(Spill { path: self.path, bytes: self.bytes })
    }
}

/// The appended records, all written.
pub(crate) struct Spill {
    path: PathBuf,
    bytes: u64,
}

/// Where each group goes: groups `0..group_bytes.len()` in that order, group `g` taking
/// `group_bytes[g]` bytes (the sum of [`SpillWriter::push`]'s answers for its records).
pub(crate) struct Layout<'a> {
    pub(crate) group_bytes: &'a [u64],
    /// The least a window holds before the next group starts another (unless one group is
    /// larger): small keeps memory low, large keeps files few. Raised to a
    /// [`WINDOWS_TARGET`]th of the total.
    pub(crate) window_bytes: u64,
}

/// Consecutive whole groups, in one file.
#[derive(Debug)]
struct Window {
    path: PathBuf,
    /// Groups `first_group..end_group`.
    first_group: u32,
    end_group: u32,
    bytes: u64,
}

/// A window in memory.
struct Loaded {
    window: usize,
    bytes: Vec<u8>,
    /// Where each record starts (its header), grouped: those of group `first_group + g` are
    /// `offsets[starts[g]..starts[g + 1]]`.
    offsets: Vec<usize>,
    starts: Vec<usize>,
}

/// The records laid out by group, read back one group at a time.
pub(crate) struct Grouped {
    windows: Vec<Window>,
    /// The window of each group.
    window_of: Vec<u32>,
    loaded: Option<Loaded>,
}

/// Copies the records of `spill` into windows of whole groups; `group_of(anchor)` is the group
/// of a record's anchor. Removes the spill file.
pub(crate) fn regroup(
    spill: Spill,
    dir: &Path,
    name: &str,
    layout: &Layout<'_>,
    group_of: impl Fn(u32) -> u32,
) -> io::Result<Grouped> {
    let group_count = layout.group_bytes.len();
    assert!(group_count < u32::MAX as usize, "groups are numbered by u32");
    let total: u64 = layout.group_bytes.iter().sum();
    if total != spill.bytes {
        return Err(corrupt("group sizes do not add up to the spill"));
    }
    let window_bytes = layout.window_bytes.max(total.div_ceil(WINDOWS_TARGET)).max(1);
    let mut windows: Vec<Window> = Vec::new();
    let mut window_of = Vec::with_capacity(group_count);
    for (group, &bytes) in layout.group_bytes.iter().enumerate() {
        let group = group as u32;
        match windows.last_mut() {
            Some(window) if window.bytes + bytes <= window_bytes || window.bytes == 0 => {
                window.end_group = group + 1;
                window.bytes += bytes;
            }
            _ => {
                let path = dir.join(format!("{name}.{}", windows.len()));
                windows.push(Window { path, first_group: group, end_group: group + 1, bytes });
            }
        }
        window_of.push((windows.len() - 1) as u32);
    }
    // Greedy packing: two neighbouring windows hold more than `window_bytes` together.
    assert!(windows.len() as u64 <= 2 * WINDOWS_TARGET + 1, "few windows");

    let mut outs = windows
        .iter()
        .map(|window| {
            Ok(BufWriter::with_capacity(WINDOW_BUFFER_BYTES, File::create(&window.path)?))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut written = vec![0u64; windows.len()];
    let mut input = BufReader::with_capacity(READ_BUFFER_BYTES, File::open(&spill.path)?);
    let mut payload = Vec::new();
    let mut left = spill.bytes;
    while left > 0 {
        let (anchor, len) = read_header(&mut input)?;
        payload.resize(len as usize, 0);
        input.read_exact(&mut payload)?;
        left = left.checked_sub(HEADER_BYTES + u64::from(len)).ok_or_else(|| corrupt("overrun"))?;
        let group = group_of(anchor);
        let window = *window_of.get(group as usize).ok_or_else(|| corrupt("no such group"))?;
        let out = &mut outs[window as usize];
        out.write_all(&group.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&payload)?;
        written[window as usize] += HEADER_BYTES + u64::from(len);
    }
    for out in outs {
        out.into_inner().map_err(|error| error.into_error())?;
    }
    std::fs::remove_file(&spill.path)?;
    if windows.iter().zip(&written).any(|(window, &written)| window.bytes != written) {
        return Err(corrupt("a group's records do not add up to its size"));
    }
    Ok(Grouped { windows, window_of, loaded: None })
}

fn read_header(input: &mut impl Read) -> io::Result<(u32, u32)> {
    let mut header = [0u8; HEADER_BYTES as usize];
    input.read_exact(&mut header)?;
    let [a0, a1, a2, a3, l0, l1, l2, l3] = header;
    Ok((u32::from_le_bytes([a0, a1, a2, a3]), u32::from_le_bytes([l0, l1, l2, l3])))
}

impl Grouped {
    #[cfg(test)]
    fn group_count(&self) -> usize {
        self.window_of.len()
    }

    /// The payloads of `group`'s records, in the order they were appended. Loads the group's
    /// window unless it is the one in memory (groups visited in order load each window once).
    pub(crate) fn group(&mut self, group: usize) -> io::Result<impl Iterator<Item = &[u8]>> {
        let window = self.window_of[group] as usize;
        if self.loaded.as_ref().is_none_or(|loaded| loaded.window != window) {
            // Free the previous window before reading the next: one in memory at a time.
            self.loaded = None;
            self.loaded = Some(load(&self.windows[window], window)?);
        }
        let Some(loaded) = &self.loaded else { unreachable!("loaded just above") };
        let local = group - self.windows[window].first_group as usize;
        let offsets = &loaded.offsets[loaded.starts[local]..loaded.starts[local + 1]];
        Ok(offsets.iter().map(|&at| payload(&loaded.bytes, at)))
    }
}

impl Drop for Grouped {
    /// The window files go as soon as they are no longer needed (the spill directory would
    /// remove them too, but only at the end of the whole check).
    fn drop(&mut self) {
        for window in &self.windows {
            let _ = std::fs::remove_file(&window.path);
        }
    }
}

/// Reads a window and sorts its records by group (a counting sort: stable, so each group's
/// records stay in the order they were appended). Costs one `usize` per record besides the
/// window's bytes.
fn load(window: &Window, index: usize) -> io::Result<Loaded> {
    let mut bytes = Vec::with_capacity(window.bytes as usize);
    File::open(&window.path)?.read_to_end(&mut bytes)?;
    if bytes.len() as u64 != window.bytes {
        return Err(corrupt("a window file changed size"));
    }
    let group_count = (window.end_group - window.first_group) as usize;
    // Two passes over the records: count each group's, then place each record's offset.
    let mut counts = vec![0usize; group_count + 1];
    for record in records(&bytes) {
        let (group, _) = record?;
        let local = group.checked_sub(window.first_group).map(|local| local as usize);
        match local {
            Some(local) if local < group_count => counts[local + 1] += 1,
            _ => return Err(corrupt("a record outside its window")),
        }
    }
    for local in 0..group_count {
        counts[local + 1] += counts[local];
    }
    let starts = counts.clone();
    let mut next = counts;
    let mut offsets = vec![0usize; starts[group_count]];
    for record in records(&bytes) {
        let (group, (start, _)) = record?;
        let local = (group - window.first_group) as usize;
        offsets[next[local]] = start - HEADER_BYTES as usize;
        next[local] += 1;
    }
    Ok(Loaded { window: index, bytes, offsets, starts })
}

/// The payload of the record whose header is at `at` (checked by [`records`] when loaded).
fn payload(bytes: &[u8], at: usize) -> &[u8] {
    let start = at + HEADER_BYTES as usize;
    let mut len = [0u8; 4];
    len.copy_from_slice(&bytes[at + 4..start]);
    &bytes[start..start + u32::from_le_bytes(len) as usize]
}

/// The records of a window file in memory: each one's group and payload range.
fn records(bytes: &[u8]) -> impl Iterator<Item = io::Result<(u32, (usize, usize))>> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at == bytes.len() {
            return None;
        }
        let record = (|| {
            let mut header =
                bytes.get(at..at + HEADER_BYTES as usize).ok_or_else(|| corrupt("cut"))?;
            let (group, len) = read_header(&mut header)?;
            let start = at + HEADER_BYTES as usize;
            let end = start + len as usize;
            if end > bytes.len() {
                return Err(corrupt("cut"));
            }
            Ok((group, (start, end)))
        })();
        match &record {
            Ok((_, (_, end))) => at = *end,
            // Stop after an error.
            Err(_) => at = bytes.len(),
        }
        Some(record)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spill_dir::SpillDir;

    #[test]
    fn records_come_back_by_group_in_append_order() {
        let dir = SpillDir::create(&std::env::temp_dir()).expect("spill directory");
        let mut writer = SpillWriter::create(dir.path().join("spill")).expect("create");
        // Anchor `a` belongs to group `a % 5`; group 4 gets nothing.
        let group_of = |anchor: u32| anchor % 5;
        let mut group_bytes = vec![0u64; 5];
        let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 5];
        for record in 0..200u32 {
            let anchor = (record * 7) % 4 + 5 * (record % 3);
            let payload = vec![record as u8; (record % 13) as usize];
            group_bytes[group_of(anchor) as usize] += writer.push(anchor, &payload).expect("push");
            expected[group_of(anchor) as usize].push(payload);
        }
        let spill = writer.finish().expect("finish");
        let spill_path = dir.path().join("spill");
        // Tiny windows: several groups per window and windows of one group both happen.
        let layout = Layout { group_bytes: &group_bytes, window_bytes: 300 };
        let mut grouped = regroup(spill, dir.path(), "grouped", &layout, group_of).expect("ok");
        assert!(!spill_path.exists(), "the spill is removed once regrouped");
        assert!(grouped.windows.len() > 1);
        assert_eq!(grouped.group_count(), 5);
        // Out of order and again: a window is reloaded when needed.
        for group in [3, 0, 1, 2, 4, 0] {
            let got: Vec<Vec<u8>> =
                grouped.group(group).expect("read").map(<[u8]>::to_vec).collect();
            assert_eq!(got, expected[group], "group {group}");
        }
    }

    #[test]
    fn sizes_that_do_not_add_up_are_an_error() {
        let dir = SpillDir::create(&std::env::temp_dir()).expect("spill directory");
        let mut writer = SpillWriter::create(dir.path().join("spill")).expect("create");
        writer.push(0, b"abc").expect("push");
        let spill = writer.finish().expect("finish");
        let layout = Layout { group_bytes: &[3], window_bytes: 1 << 20 };
        assert!(regroup(spill, dir.path(), "grouped", &layout, |_| 0).is_err());
    }
}
