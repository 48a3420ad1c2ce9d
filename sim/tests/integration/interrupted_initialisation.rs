//! A node crashed while it initialised its data directory, on turmoil's simulated file system
//! (seeds 2455 and 2825 of the standard campaign): the restart redoes the initialisation, the
//! node then writes, crashes again, and must start with what it wrote. The crash is swept over
//! every simulated millisecond of the initialisation.
//!
//! Also pinned here: the fact about turmoil 0.7's file system that made the redo lose its first
//! segment (`conclave_core::storage::removal` explains the rule the engine keeps because of it).
//! Should a turmoil upgrade change it, this test says so.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use conclave_core::raft::{Entry, EntryPayload, HardState, NodeId, PersistBatch};
use conclave_core::seams::storage::{Storage, StorageJob};
use conclave_core::storage::fs::{FileSystem, FsFile, OpenMode};
use conclave_core::storage::{WalOptions, WalStorage};
use conclave_sim::disk::DiskFaults;
use conclave_sim::fs::SimFs;

const DATA_DIR: &str = "/data";
/// As the failing seeds drew it: every sync takes simulated time, so a crash can land in one.
const SYNC_MS: u64 = 2;
const MAX_STEPS: u64 = 10_000;

fn world(seed: u64) -> turmoil::Sim<'static> {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_millis(MAX_STEPS));
    builder.fs().block_size(512);
    builder.build()
}

fn entries() -> Vec<Entry> {
    (1..=5)
        .map(|index| Entry {
            term: 1,
            index,
            payload: EntryPayload::Command(Bytes::from(format!("v{index}"))),
        })
        .collect()
}

/// What the host's incarnations report to the test.
#[derive(Default)]
struct Progress {
    incarnations: u64,
    /// An open finished (by incarnation).
    opened: Vec<u64>,
    /// The second incarnation's entries are durable.
    written: bool,
    /// The third incarnation recovered this many entries.
    recovered_entries: Option<usize>,
    refused: Option<String>,
}

/// Incarnation 1 initialises (and is crashed at some point); 2 recovers and writes entries;
/// 3 recovers them.
async fn node(progress: Rc<RefCell<Progress>>) -> turmoil::Result {
    let incarnation = {
        let mut progress = progress.borrow_mut();
        progress.incarnations += 1;
        progress.incarnations
    };
    let fs = SimFs::new(DiskFaults::default(), incarnation, SYNC_MS);
    let (mut storage, recovered) = match WalStorage::open(fs, DATA_DIR, WalOptions::default()).await
    {
        Ok(opened) => opened,
        Err(error) => {
            progress.borrow_mut().refused = Some(format!("incarnation {incarnation}: {error}"));
            return Ok(());
        }
    };
    progress.borrow_mut().opened.push(incarnation);
    match incarnation {
        2 => {
            let writer = storage.writer();
            let hard_state = HardState { term: 1, vote: NodeId(1), commit: 0 };
            let batch = PersistBatch {
                id: 1,
                snapshot: None,
                entries: entries(),
                hard_state: Some(hard_state),
            };
            storage.submit(StorageJob::Persist(batch))?;
            let durable = async {
                while storage.progress_changed().await.is_ok_and(|p| p.durable_batch < 1) {}
                progress.borrow_mut().written = true;
                std::future::pending::<()>().await;
            };
            tokio::select! {
                result = writer => result?,
                () = durable => {}
            }
        }
        3 => progress.borrow_mut().recovered_entries = Some(recovered.restored.entries.len()),
        _ => std::future::pending().await,
    }
    Ok(())
}

/// Steps until `done` holds; false if the host stopped first or time ran out.
fn step_until(
    sim: &mut turmoil::Sim<'_>,
    progress: &RefCell<Progress>,
    done: impl Fn(&Progress) -> bool,
) -> bool {
    for _ in 0..MAX_STEPS {
        if done(&progress.borrow()) {
            return true;
        }
        if progress.borrow().refused.is_some() || sim.step().is_err() {
            return false;
        }
    }
    false
}

#[test]
fn a_crash_anywhere_in_the_initialisation_loses_nothing_written_after_the_restart() {
    let mut crashes_before_initialised = 0;
    for crash_after_ms in 1.. {
        let mut sim = world(crash_after_ms);
        let progress = Rc::new(RefCell::new(Progress::default()));
        let host_progress = progress.clone();
        sim.host("n1", move || node(host_progress.clone()));
        for _ in 0..crash_after_ms {
            sim.step().unwrap();
        }
        let initialised = progress.borrow().opened.contains(&1);
        sim.crash("n1");
        sim.bounce("n1");
        let written = step_until(&mut sim, &progress, |p| p.written);
        assert!(written, "crash after {crash_after_ms} ms: {:?}", progress.borrow().refused);
        sim.crash("n1");
        sim.bounce("n1");
        let recovered = step_until(&mut sim, &progress, |p| p.recovered_entries.is_some());
        let progress = progress.borrow();
        assert!(recovered, "crash after {crash_after_ms} ms: {:?}", progress.refused);
        assert_eq!(progress.recovered_entries, Some(5), "crash after {crash_after_ms} ms");
        if initialised {
            break;
        }
        crashes_before_initialised += 1;
    }
    // The initialisation's syncs each take SYNC_MS: there are several moments to crash in.
    assert!(crashes_before_initialised >= 4, "{crashes_before_initialised}");
}

#[test]
fn turmoil_loses_a_file_synced_while_the_removal_of_its_name_is_pending() {
    let mut sim = world(1);
    let content = Rc::new(RefCell::new(None));
    let host_content = content.clone();
    // A client runs to its end; the simulation then stops.
    sim.client("n1", {
        let content = host_content.clone();
        async move {
            let fs = SimFs::new(DiskFaults::default(), 1, 0);
            let (dir, path) = (Path::new("/d"), Path::new("/d/a"));
            fs.create_dir(dir).await?;
            fs.sync_dir(Path::new("/")).await?;
            fs.open(path, OpenMode::CreateNew).await?;
            fs.sync_dir(dir).await?;
            fs.remove_file(path).await?;
            let again = fs.open(path, OpenMode::CreateNew).await?;
            again.write_all_at(0, b"synced".to_vec()).await?;
            again.sync_all().await?;
            fs.sync_dir(dir).await?;
            // The live view already lost it, not only a crash.
            *content.borrow_mut() = Some(again.read_at(0, 6).await?);
            Ok(())
        }
    });
    sim.run().unwrap();
    assert_eq!(content.borrow().as_deref(), Some(&b""[..]), "turmoil keeps it now: see removal.rs");
}
