//! What a crash does to TCP in the simulator, below Conclave's transport: a peer holding a
//! connection to a host that crashes must see that connection end (as a real kill -9 closes
//! its sockets), and the host's next incarnation must be able to dial its peers. If either
//! failed, every restart in every seed would come with a stretch of silent isolation that no
//! real cluster has, and restart bugs would hide in it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

const PORT: u16 = 7000;

/// Accepts connections and keeps each open, answering nothing, until its peer closes it.
async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        tokio::task::spawn_local(async move {
            let mut buffer = [0u8; 64];
            while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
        });
    }
}

/// Times, in simulated milliseconds, of what one host saw of its own dial to the other.
#[derive(Default)]
struct DialLog {
    connected_ms: Cell<Option<u64>>,
    ended_ms: Cell<Option<u64>>,
    refusals: Cell<u32>,
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Dials `peer` until it connects, sends a byte, then reads until the connection ends.
async fn dial_and_hold(peer: &'static str, log: Rc<DialLog>) {
    let mut stream = loop {
        match TcpStream::connect((peer, PORT)).await {
            Ok(stream) => break stream,
            Err(_) => {
                log.refusals.set(log.refusals.get() + 1);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    log.connected_ms.set(Some(now_ms()));
    let _ = stream.write_all(b"x").await;
    let mut buffer = [0u8; 64];
    while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
    log.ended_ms.set(Some(now_ms()));
}

/// A host's software: serves its port and holds a dial to `peer`.
async fn listen_and_dial(peer: &'static str, log: Rc<DialLog>) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    tokio::task::spawn_local(serve(listener));
    dial_and_hold(peer, log).await;
    std::future::pending::<()>().await;
    Ok(())
}

/// The network's latency bound in these runs: the deadlines below allow a few round trips.
const MAX_LATENCY_MS: u64 = 10;

#[test]
fn a_peer_sees_a_crashed_hosts_connection_end_and_the_restarted_host_dials_it() {
    // Seeded, so that a failure replays; several seeds, so that the order of events varies.
    for seed in 0..16 {
        crash_and_restart(seed);
    }
}

fn crash_and_restart(seed: u64) {
    // turmoil's default latency (up to 100 ms a message, drawn at random) would let a dial
    // take longer than the "at once" these deadlines mean; its default seed is random.
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(10))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(MAX_LATENCY_MS))
        .rng_seed(seed)
        .build();
    // What each incarnation of "a" saw of its dial to "b", and what "b" saw of its dial to "a".
    let a_dials: Rc<std::cell::RefCell<Vec<Rc<DialLog>>>> = Rc::default();
    let b_dial = Rc::new(DialLog::default());
    {
        let a_dials = a_dials.clone();
        sim.host("a", move || {
            let log = Rc::new(DialLog::default());
            a_dials.borrow_mut().push(log.clone());
            listen_and_dial("b", log)
        });
    }
    {
        let b_dial = b_dial.clone();
        sim.host("b", move || listen_and_dial("a", b_dial.clone()));
    }
    let (crash_ms, restart_ms, until_ms) = (1_000, 1_020, 1_500);
    while now_ms_of(&sim) < crash_ms {
        sim.step().expect("the simulation runs");
    }
    assert!(b_dial.connected_ms.get().is_some(), "b connected to a before the crash");
    sim.crash("a");
    while now_ms_of(&sim) < restart_ms {
        sim.step().expect("the simulation runs");
    }
    sim.bounce("a");
    while now_ms_of(&sim) < until_ms {
        sim.step().expect("the simulation runs");
    }
    let ended_ms = b_dial.ended_ms.get();
    assert!(
        ended_ms.is_some_and(|ended| ended <= restart_ms + 50),
        "seed {seed}: b's connection to the crashed a must end around the crash, not linger: \
         ended at {ended_ms:?}"
    );
    let dials = a_dials.borrow();
    assert_eq!(dials.len(), 2, "a ran twice");
    let connected_ms = dials[1].connected_ms.get();
    assert!(
        connected_ms.is_some_and(|connected| connected <= restart_ms + 50),
        "seed {seed}: the restarted a must reach b at once: connected at {connected_ms:?} after {} \
         refusals",
        dials[1].refusals.get()
    );
}

fn now_ms_of(sim: &turmoil::Sim<'_>) -> u64 {
    sim.elapsed().as_millis() as u64
}
