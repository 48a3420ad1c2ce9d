//! Checking a large file one partition at a time, with memory for one partition (and a window
//! of its neighbours, `grouped_spill.rs`) instead of every operation.
//!
//! The file may list operations in any order, so a partition's last operation may be the
//! file's last line. One pass reads and validates every line, as `reader.rs` does, and keeps
//! only what partitioning needs: the keys, joined as transactions and ranges name them
//! (`key_joins.rs`). Each relevant operation goes to a spill file as a compact record
//! (`op_record.rs`), tagged with its anchor; each operation's client, call and return go to a
//! second spill. Then:
//!
//! 1. the clients are checked one by one (no two operations of a client open at once: the
//!    same rule and the same first error as `history::validate_clients`);
//! 2. the joins are completed (ranges), which fixes every partition and its size, and so the
//!    order the checker takes them in (by size, ties by smallest key, as `partition_source.rs`
//!    orders them);
//! 3. the records are regrouped into that order, and each partition is rebuilt as a table of
//!    its own when the checker visits it.
//!
//! The checker then does exactly what it does with a table in memory (`check.rs` sees a
//! [`PartitionView`] either way), so the report is the same.

use std::io::{self, BufRead};

use crate::earliest_ops::EarliestOps;
use crate::error::Location;
use crate::grouped_spill::{Grouped, Layout, SpillWriter, regroup};
use crate::history::{ClientId, OpIndex, Time, validate_clients};
use crate::key_joins::{Anchor, KeyJoins, Partitioning};
use crate::limits;
use crate::op_record::{self, Body};
use crate::partition::is_relevant_operation;
use crate::partition_source::{PartitionSource, PartitionView};
use crate::reader::{Lines, ReadError, too_many};
use crate::spill_dir::SpillDir;
use crate::table::Table;
use crate::varint::{self, Cursor, corrupt};

/// A window of this many bytes of records is read back at a time (unless a partition is
/// larger): about 120,000 typical operations, a few megabytes with their index.
pub(crate) const WINDOW_BYTES: u64 = 4 << 20;

/// A history read into spill files.
pub(crate) struct SpilledHistory {
    /// Operations in the file.
    pub(crate) op_count: usize,
    /// Operations that cannot affect the verdict (failed ones, reads of unknown outcome).
    pub(crate) dropped: usize,
    pub(crate) partitions: SpilledPartitions,
    /// The first operations by call, for a timeline when there is no violation to show.
    pub(crate) earliest: EarliestOps,
}

/// Operations and bytes spilled per anchor.
#[derive(Default)]
struct AnchorTotals {
    keys: Vec<(u64, u64)>,
    range_sets: Vec<(u64, u64)>,
    keyless: (u64, u64),
}

impl AnchorTotals {
    fn add(&mut self, anchor: Anchor, bytes: u64) {
        let (list, id) = match anchor {
            Anchor::Key(id) => (&mut self.keys, id),
            Anchor::Ranges(id) => (&mut self.range_sets, id),
            Anchor::Keyless => {
                self.keyless.0 += 1;
                self.keyless.1 += bytes;
                return;
            }
        };
        if list.len() <= id as usize {
            list.resize(id as usize + 1, (0, 0));
        }
        list[id as usize].0 += 1;
        list[id as usize].1 += bytes;
    }

    /// Every anchor with what it holds.
    fn all(&self) -> impl Iterator<Item = (Anchor, (u64, u64))> + '_ {
        let keys = self.keys.iter().enumerate().map(|(id, &t)| (Anchor::Key(id as u32), t));
        let sets =
            self.range_sets.iter().enumerate().map(|(id, &t)| (Anchor::Ranges(id as u32), t));
        keys.chain(sets).chain(std::iter::once((Anchor::Keyless, self.keyless)))
    }
}

/// The clients seen, densely numbered in order of first appearance.
#[derive(Default)]
struct Clients {
    dense: std::collections::HashMap<ClientId, u32>,
    ids: Vec<ClientId>,
    bytes: Vec<u64>,
}

impl Clients {
    fn dense(&mut self, client: ClientId) -> u32 {
        let next = self.ids.len() as u32;
        let dense = *self.dense.entry(client).or_insert(next);
        if dense == next {
            self.ids.push(client);
            self.bytes.push(0);
        }
        dense
    }
}

/// Reads and validates a JSON Lines history into spill files in `dir` (removed with the
/// result). `window_bytes`: see [`WINDOW_BYTES`]; `earliest_count`: how many of the first
/// operations by call to keep for a timeline. Errors are those of `reader::read_table`, in
/// the same order, and I/O errors of the spill.
pub(crate) fn read_spilled(
    reader: impl BufRead,
    dir: SpillDir,
    window_bytes: u64,
    earliest_count: usize,
) -> Result<SpilledHistory, ReadError> {
    let mut lines = Lines::new(reader);
    let mut ops_spill = SpillWriter::create(dir.path().join("ops"))?;
    let mut clients_spill = SpillWriter::create(dir.path().join("clients"))?;
    let mut joins = KeyJoins::default();
    let mut totals = AnchorTotals::default();
    let mut clients = Clients::default();
    let mut earliest = EarliestOps::new(earliest_count);
    let mut record = Vec::new();
    let mut op_count = 0usize;
    let mut dropped = 0usize;
    while let Some((operation, line, text)) = lines.next_operation()? {
        if op_count == limits::HISTORY_OPS_MAX {
            return Err(too_many(line));
        }
        let index = op_count;
        op_count += 1;
        record.clear();
        varint::put(&mut record, line as u64);
        varint::put(&mut record, operation.call);
        if let Some(ret) = operation.ret {
            // Validated: no return before its call.
            varint::put(&mut record, ret - operation.call);
        }
        let client = clients.dense(operation.client);
        clients.bytes[client as usize] += clients_spill.push(client, &record)?;
        earliest.offer(index, line, &operation);
        if !is_relevant_operation(&operation) {
            dropped += 1;
            continue;
        }
        let anchor = joins.anchor(&operation.op);
        let key = match (anchor, operation.op.key()) {
            (Anchor::Key(id), Some(_)) => Some(id),
            _ => None,
        };
        record.clear();
        op_record::encode(&operation, index, line, key, text, &mut record);
        totals.add(anchor, ops_spill.push(anchor.tag(), &record)?);
    }
    validate_spilled_clients(clients_spill.finish()?, &clients, &dir)?;

    let partitioning = joins.finish();
    let mut partition_totals = vec![(0u64, 0u64); partitioning.keyless as usize + 1];
    for (anchor, (ops, bytes)) in totals.all() {
        let total = &mut partition_totals[partitioning.partition_of(anchor) as usize];
        total.0 += ops;
        total.1 += bytes;
    }
    // Check order: by size; ties by smallest key (partitions are numbered so), keyless last.
    let mut order: Vec<u32> = (0..partition_totals.len() as u32)
        .filter(|&partition| partition_totals[partition as usize].0 > 0)
        .collect();
    order.sort_by_key(|&partition| partition_totals[partition as usize].0);
    assert!(
        order.len() >= partitioning.keyless as usize,
        "every key's partition holds the operation that named it"
    );
    let mut position_of = vec![u32::MAX; partition_totals.len()];
    for (position, &partition) in order.iter().enumerate() {
        position_of[partition as usize] = position as u32;
    }
    let group_bytes: Vec<u64> =
        order.iter().map(|&partition| partition_totals[partition as usize].1).collect();
    let layout = Layout { group_bytes: &group_bytes, window_bytes };
    let grouped = regroup(ops_spill.finish()?, dir.path(), "partitions", &layout, |tag| {
        position_of[partitioning.partition_of(Anchor::from_tag(tag)) as usize]
    })?;
    let kept: u64 = order.iter().map(|&partition| partition_totals[partition as usize].0).sum();
    assert_eq!(kept as usize + dropped, op_count);
    Ok(SpilledHistory {
        op_count,
        dropped,
        partitions: SpilledPartitions { grouped, partitioning, order, _dir: dir },
        earliest,
    })
}

/// Checks each client's operations, client by client in ascending order, so that the first
/// error is the one `validate_clients` over the whole history reports. A record of the clients
/// spill is an operation's line, call, and its return's distance from the call (if any).
fn validate_spilled_clients(
    spill: crate::grouped_spill::Spill,
    clients: &Clients,
    dir: &SpillDir,
) -> Result<(), ReadError> {
    let mut by_id: Vec<u32> = (0..clients.ids.len() as u32).collect();
    by_id.sort_unstable_by_key(|&dense| clients.ids[dense as usize]);
    let mut rank = vec![0u32; by_id.len()];
    for (position, &dense) in by_id.iter().enumerate() {
        rank[dense as usize] = position as u32;
    }
    let group_bytes: Vec<u64> = by_id.iter().map(|&dense| clients.bytes[dense as usize]).collect();
    let layout = Layout { group_bytes: &group_bytes, window_bytes: WINDOW_BYTES };
    let mut grouped = regroup(spill, dir.path(), "clients", &layout, |dense| rank[dense as usize])?;
    let mut ops: Vec<(Time, Option<Time>, usize)> = Vec::new();
    for (position, &dense) in by_id.iter().enumerate() {
        let client = clients.ids[dense as usize];
        ops.clear();
        for payload in grouped.group(position)? {
            let mut cursor = Cursor::new(payload);
            let line = cursor.usize()?;
            let call = cursor.u64()?;
            let ret = match cursor.is_empty() {
                true => None,
                false => Some(call.checked_add(cursor.u64()?).ok_or_else(|| corrupt("return"))?),
            };
            if !cursor.is_empty() {
                return Err(corrupt("trailing bytes").into());
            }
            ops.push((call, ret, line));
        }
        // In file order, as the whole history's check breaks ties.
        validate_clients(
            ops.len(),
            |index| (client, ops[index].0, ops[index].1),
            |index| Location::Line(ops[index].2),
        )?;
    }
    Ok(())
}

/// A history's partitions in spill files, in check order.
pub(crate) struct SpilledPartitions {
    grouped: Grouped,
    partitioning: Partitioning,
    /// The partition (of `partitioning`) at each position of the check order.
    order: Vec<u32>,
    /// Held until the end, and dropped last: removes whatever files are left.
    _dir: SpillDir,
}

impl PartitionSource for SpilledPartitions {
    type Error = io::Error;

    fn len(&self) -> usize {
        self.order.len()
    }

    fn visit<R>(
        &mut self,
        position: usize,
        visit: impl FnOnce(&PartitionView<'_>) -> R,
    ) -> io::Result<R> {
        let partitioning = &self.partitioning;
        let keys = partitioning.keys_of(self.order[position]);
        let mut table = Table::new();
        let mut history_indexes: Vec<OpIndex> = Vec::new();
        for payload in self.grouped.group(position)? {
            let record = op_record::decode(payload, |id| partitioning.key(id))?;
            // Records come in file order.
            if history_indexes.last().is_some_and(|&last| last >= record.index) {
                return Err(corrupt("records out of order"));
            }
            history_indexes.push(record.index);
            match record.body {
                Body::Single(op) => table.push_single_key_line(&op, record.line),
                Body::Whole(operation) => table.push_line(&operation, record.line),
            }
        }
        table.finish();
        let mut ops: Vec<usize> = (0..table.len()).collect();
        ops.sort_by_key(|&index| (table.row(index).call, index));
        Ok(visit(&PartitionView {
            table: &table,
            keys: &keys,
            ops: &ops,
            history_indexes: Some(&history_indexes),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{CheckOptions, CheckReport, check_partitions};
    use crate::generate::{
        Anomaly, GenerateOptions, SplitMix64, key_name, linearizable_history, plant_anomaly,
    };
    use crate::history::{History, Op, Operation};
    use crate::jsonl::to_jsonl_string;
    use crate::partition_source::SplitTable;
    use crate::reader::read_table;
    use crate::timeline_html::BARS_MAX;
    use std::time::Instant;

    /// What the CLI prints and draws: the report, and the operations it shows with their
    /// lines and history indexes.
    type Shown = (CheckReport, Option<(History, Vec<OpIndex>)>);

    fn in_memory(text: &str, options: &CheckOptions) -> Result<Shown, String> {
        let table = read_table(text.as_bytes()).map_err(|error| error.to_string())?;
        let mut partitions = SplitTable::new(&table);
        let dropped = partitions.dropped;
        let Ok((report, failing)) =
            check_partitions(&mut partitions, table.len(), dropped, options, Instant::now());
        let shown = failing.map(|position| {
            let Ok(shown) = partitions.visit(position, |view| view.shown());
            shown
        });
        Ok((report, shown))
    }

    fn spilled(text: &str, options: &CheckOptions, window_bytes: u64) -> Result<Shown, String> {
        let dir = SpillDir::create(&std::env::temp_dir()).map_err(|error| error.to_string())?;
        let mut read = read_spilled(text.as_bytes(), dir, window_bytes, BARS_MAX + 1)
            .map_err(|error| error.to_string())?;
        let (op_count, dropped) = (read.op_count, read.dropped);
        let (report, failing) =
            check_partitions(&mut read.partitions, op_count, dropped, options, Instant::now())
                .map_err(|error| error.to_string())?;
        let shown = match failing {
            Some(position) => Some(
                read.partitions.visit(position, |view| view.shown()).map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        Ok((report, shown))
    }

    /// A generated history with transactions and ranges joining keys, in shuffled line order
    /// with blank lines, some outputs changed (violations the search must find) and, on
    /// seeds divisible by 3, a planted anomaly the fast path proves.
    fn history_text(seed: u64) -> String {
        let mut rng = SplitMix64::new(seed);
        let options = GenerateOptions {
            seed,
            op_count: 40 + rng.below(300) as usize,
            client_count: 1 + rng.below(8) as u32,
            key_count: 1 + rng.below(25) as u32,
            multi_key_per_mille: [0, 20, 100, 300][rng.below(4) as usize],
            values_per_key: [0, 0, 2, 5][rng.below(4) as usize],
            ..GenerateOptions::default()
        };
        let mut history = linearizable_history(&options);
        if seed.is_multiple_of(3) {
            let anomaly = Anomaly::ALL[rng.below(5) as usize];
            if let Some(planted) = plant_anomaly(&history, anomaly, &key_name(0)) {
                history = planted.history;
            }
        }
        let mut ops: Vec<Operation> = history.into_ops();
        for _ in 0..rng.below(3) {
            let index = rng.below(ops.len() as u64) as usize;
            if let Op::Get { value, .. } = &mut ops[index].op {
                *value = Some(format!("changed-{seed}"));
            }
        }
        // Any order: a partition's operations arrive scattered.
        for index in (1..ops.len()).rev() {
            ops.swap(index, rng.below(index as u64 + 1) as usize);
        }
        let history = History::new(ops).expect("reordering keeps a history valid");
        let mut text = String::new();
        for line in to_jsonl_string(&history).lines() {
            text.push_str(line);
            text.push('\n');
            if rng.chance(50) {
                text.push_str("  \n");
            }
        }
        text
    }

    #[test]
    fn spilled_partitions_give_the_in_memory_report() {
        let mut verdicts = std::collections::BTreeMap::new();
        let mut multi_key = 0;
        for seed in 0..120u64 {
            let text = history_text(seed);
            let options = CheckOptions {
                // Now and then a budget that runs out part way: it must run out at the same
                // partition, after the same steps.
                max_steps: if seed.is_multiple_of(7) { 300 } else { 200_000 },
                minimize_max_steps: 200_000,
                fast_path: !seed.is_multiple_of(5),
                ..CheckOptions::default()
            };
            let expected = in_memory(&text, &options).expect("valid");
            // Windows of a few records and of everything.
            for window_bytes in [1, 600, 1 << 20] {
                let got = spilled(&text, &options, window_bytes).expect("valid");
                assert_eq!(got.0, expected.0, "seed {seed}, window {window_bytes}");
                assert_eq!(got.1, expected.1, "seed {seed}, window {window_bytes}");
            }
            *verdicts.entry(expected.0.verdict.as_str()).or_insert(0) += 1;
            multi_key += usize::from(expected.0.partitions.iter().any(|p| p.keys.len() > 1));
        }
        // The histories cover what they are meant to.
        assert!(verdicts.len() == 3, "{verdicts:?}");
        assert!(multi_key > 30, "{multi_key}");
    }

    #[test]
    fn spilled_reading_rejects_what_the_table_reader_rejects_with_the_same_error() {
        let line = |client: u64, call: u64, ret: u64, key: &str| {
            format!(
                r#"{{"client":{client},"op":"put","key":"{key}","value":"v{call}","call":{call},"return":{ret},"status":"ok"}}"#
            )
        };
        let cases = [
            // Two clients overlapping themselves, listed out of order: the smallest client's
            // first overlap is reported.
            [line(9, 0, 10, "a"), line(2, 20, 30, "b"), line(9, 5, 6, "c"), line(2, 25, 26, "a")]
                .join("\n"),
            [line(1, 0, 10, "a"), "{\"client\":1}".into()].join("\n"),
            [line(1, 0, 10, "a"), "not json".into()].join("\n"),
            format!("{}\n{}", line(1, 0, 10, "a"), "x".repeat(limits::LINE_BYTES_MAX + 5)),
        ];
        for text in cases {
            let expected = in_memory(&text, &CheckOptions::default()).expect_err("invalid");
            let got = spilled(&text, &CheckOptions::default(), 64).expect_err("invalid");
            assert_eq!(got, expected);
        }
        let empty = spilled("\n\n", &CheckOptions::default(), 64).expect("empty is valid");
        assert!(empty.0.is_vacuous() && empty.0.op_count == 0);
    }
}
