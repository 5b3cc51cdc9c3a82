use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::{ErrorCode, RequestAccess};
use sekisho_broker::audit::{self, EventKind, Verdict};
use sekisho_broker::session::RequestId;
use sekisho_broker::store::{Store, StoreLocation};
use sekisho_client::{ControlError, Session};
use sekisho_e2e::faults::{FailingDisk, SmallDisk};
use sekisho_e2e::{EchoServer, TestBroker, Vendor, stores};
use tokio::sync::watch;

/// The broker must serve again this soon after the store can be written again.
const RECOVERY: Duration = Duration::from_secs(5);

/// A broker whose data directory (and SQLite database) is on `disk`.
async fn broker_on(disk: &SmallDisk, echo: &EchoServer) -> TestBroker {
    broker_in(disk.path(), echo).await
}

/// A broker whose data directory (and SQLite database) is under `dir`.
async fn broker_in(dir: &std::path::Path, echo: &EchoServer) -> TestBroker {
    let data = dir.join("data");
    TestBroker::start_with(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        |config| {
            config.database = Some(StoreLocation::Sqlite(data.join("sekisho.db")));
            config.data_dir = data;
            // The loop below asks as fast as it can; the per-minute bound is not under test.
            config.limits.requests_per_minute = 1_000_000;
        },
    )
    .await
}

/// What a technician asking without pause saw: each request acknowledged, and refusals.
#[derive(Default)]
struct Asked {
    acknowledged: Vec<String>,
    refused_store: usize,
    other_refusals: Vec<String>,
}

fn ask() -> RequestAccess {
    RequestAccess {
        targets: vec!["echo".into()],
        purpose: "store fault test".into(),
        ticket: "T-1".into(),
        duration_secs: 600,
    }
}

/// Asks for sessions one after another until `stop`, noting each answer and telling
/// `progress` how many were refused for the store and how many acknowledged.
async fn keep_asking(
    mut session: Session,
    asked: Arc<Mutex<Asked>>,
    progress: watch::Sender<(usize, usize)>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow_and_update() {
        let answer = tokio::select! {
            answer = session.request(ask()) => answer,
            _ = stop.changed() => break,
        };
        let mut asked = asked.lock().unwrap();
        match answer {
            Ok(view) => asked.acknowledged.push(view.id),
            Err(ControlError::Refused(refusal)) if refusal.code == ErrorCode::StoreUnavailable => {
                asked.refused_store += 1;
            }
            Err(other) => asked.other_refusals.push(other.to_string()),
        }
        progress.send_replace((asked.refused_store, asked.acknowledged.len()));
    }
}

/// A live session that has carried a forward, and a technician asking without pause.
struct Load {
    live: Session,
    asked: Arc<Mutex<Asked>>,
    /// Refused for the store, acknowledged.
    progress: watch::Receiver<(usize, usize)>,
    stop: watch::Sender<bool>,
    asker: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts the load on `broker`; returns once five requests were acknowledged, with how
    /// many had been.
    async fn start(broker: &TestBroker) -> (Load, usize) {
        let live = broker.open_session("acme-ehr", "sato", &["echo"]).await;
        sekisho_e2e::echo_once(&live, "echo").await;
        let asking = broker.connect("acme-ehr", "tanaka").await.unwrap();
        let asked = Arc::new(Mutex::new(Asked::default()));
        let (progress_tx, mut progress) = watch::channel((0, 0));
        let (stop, stopped) = watch::channel(false);
        let asker = tokio::spawn(keep_asking(asking, asked.clone(), progress_tx, stopped));
        let before = progress.wait_for(|(_, acked)| *acked >= 5).await.unwrap().1;
        let load = Load {
            live,
            asked,
            progress,
            stop,
            asker,
        };
        (load, before)
    }

    /// Stops asking; what was answered, with nothing refused but for the store.
    async fn stop(self) -> Asked {
        self.stop.send_replace(true);
        self.asker.await.unwrap();
        let asked = std::mem::take(&mut *self.asked.lock().unwrap());
        assert!(
            asked.other_refusals.is_empty(),
            "{:?}",
            asked.other_refusals
        );
        asked
    }
}

/// Every request in `acknowledged` is in `store`, with its `request-made` event, and the chain
/// is intact.
async fn acknowledged_are_on_the_record(store: &Store, acknowledged: &[String]) {
    for id in acknowledged {
        let record = store.request(&RequestId::parse(id).unwrap()).await;
        assert!(record.is_ok(), "acknowledged {id} is not in the database");
    }
    let events = store.all_audit_events().await.unwrap();
    for id in acknowledged {
        assert!(
            events
                .iter()
                .any(|event| event.event.kind == EventKind::RequestMade
                    && event.event.request.as_deref() == Some(id.as_str())),
            "acknowledged {id} has no request-made event"
        );
    }
    assert!(matches!(audit::verify(events), Verdict::Intact { .. }));
}

/// What must happen once the store cannot write: requests refused for the store, several
/// times over; a forward refused, since it cannot be put on the record; the live session
/// ended, saying why.
async fn refuses_and_cuts(progress: &mut watch::Receiver<(usize, usize)>, live: &Session) {
    tokio::time::timeout(
        Duration::from_secs(20),
        progress.wait_for(|(refused, _)| *refused >= 5),
    )
    .await
    .expect("requests are refused while the store cannot write")
    .unwrap();
    forward_refused_and_session_cut(live).await;
}

/// A forward cannot be put on the record: refused, and the live session ends, saying why.
async fn forward_refused_and_session_cut(live: &Session) {
    assert!(live.open_forward("echo").await.is_err());
    let ended = tokio::time::timeout(Duration::from_secs(5), live.forwarder().ended())
        .await
        .expect("the live session ended");
    assert!(
        ended.reason.contains("can no longer record"),
        "{}",
        ended.reason
    );
}

/// Runs a fault (`break_store`, then `heal_store`) under a technician asking without pause
/// and a live session, and checks what the store promises: refusals while it cannot write,
/// every acknowledged request on the record afterwards, the chain intact, the live session
/// ended as `store-unavailable` on the record, and the broker serving again within
/// [`RECOVERY`] without a restart.
async fn across_a_fault(
    disk: &SmallDisk,
    break_store: impl FnOnce(&SmallDisk),
    heal_store: impl FnOnce(&SmallDisk),
) {
    let echo = EchoServer::start().await;
    let broker = broker_on(disk, &echo).await;
    let (mut load, before) = Load::start(&broker).await;

    break_store(disk);
    refuses_and_cuts(&mut load.progress, &load.live).await;

    heal_store(disk);
    let healed = Instant::now();
    let acked_when_healed = load.progress.borrow().1;
    tokio::time::timeout(
        Duration::from_secs(20),
        load.progress
            .wait_for(|(_, acked)| *acked > acked_when_healed),
    )
    .await
    .expect("requests are taken again once the store can write")
    .unwrap();
    let recovered = healed.elapsed();
    let asked = load.stop().await;
    assert!(
        recovered <= RECOVERY,
        "the broker took {recovered:?} to serve again"
    );
    assert!(asked.acknowledged.len() > before);

    // The live session's end is on the record for what it was, once the record could be
    // written again (the broker keeps trying).
    let store_unavailable = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ended = broker.events_of(EventKind::SessionEnded).await;
            if ended
                .iter()
                .any(|event| event.event.detail_value("reason") == Some("store-unavailable"))
            {
                return;
            }
            // sync-ok: the end is recorded by the broker's retry, polled here, bounded.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        store_unavailable.is_ok(),
        "the session's end is not on the record as store-unavailable"
    );
    // Everything acknowledged is on the record, read through connections of its own.
    let store = broker.desk().store().clone();
    acknowledged_are_on_the_record(&store, &asked.acknowledged).await;
    // Every other writer works again: the admin's desk approves, and the broker serves a
    // whole new session.
    broker.approve(asked.acknowledged.last().unwrap()).await;
    let again = broker.open_session("acme-ehr", "ito", &["echo"]).await;
    sekisho_e2e::echo_once(&again, "echo").await;
}

fn small_disk(test: &str) -> Option<SmallDisk> {
    if stores::postgres_selected() {
        eprintln!("{test}: skipped on PostgreSQL (a SQLite file on a small disk is the test)");
        return None;
    }
    match SmallDisk::mount(16) {
        Ok(disk) => Some(disk),
        Err(why) => {
            eprintln!(
                "{test}: skipped, a small filesystem cannot be mounted here ({why}); CI runs it as root"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_loses_nothing_acknowledged_and_heals_by_itself() {
    let Some(disk) = small_disk("a_full_disk") else {
        return;
    };
    across_a_fault(&disk, SmallDisk::fill, SmallDisk::free).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_database_connections_lose_nothing_acknowledged_and_the_broker_carries_on() {
    if !stores::postgres_selected() {
        eprintln!(
            "killed_database_connections: skipped on SQLite (PostgreSQL backends are what is killed)"
        );
        return;
    }
    let echo = EchoServer::start().await;
    let broker = TestBroker::start_with(
        &[Vendor::new("acme-ehr").target("echo", echo.addr())],
        |config| {
            config.limits.requests_per_minute = 1_000_000;
        },
    )
    .await;
    let asking = broker.connect("acme-ehr", "tanaka").await.unwrap();
    let asked = Arc::new(Mutex::new(Asked::default()));
    let (progress_tx, mut progress) = watch::channel((0, 0));
    let (stop_tx, stop) = watch::channel(false);
    let asker = tokio::spawn(keep_asking(asking, asked.clone(), progress_tx, stop));
    for round in 1..=5usize {
        progress
            .wait_for(|(_, acked)| *acked >= round * 5)
            .await
            .unwrap();
        // Every connection of this test's database but the one that kills them.
        broker
            .execute_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .await;
    }
    let killed_at = Instant::now();
    let acked = progress.borrow().1;
    tokio::time::timeout(
        Duration::from_secs(20),
        progress.wait_for(|(_, now)| *now >= acked + 5),
    )
    .await
    .expect("requests are taken again after the connections were killed")
    .unwrap();
    assert!(
        killed_at.elapsed() <= RECOVERY,
        "took {:?}",
        killed_at.elapsed()
    );
    stop_tx.send_replace(true);
    asker.await.unwrap();
    let asked = std::mem::take(&mut *asked.lock().unwrap());
    assert!(
        asked.other_refusals.is_empty(),
        "{:?}",
        asked.other_refusals
    );
    let store = broker.desk().store().clone();
    for id in &asked.acknowledged {
        assert!(
            store.request(&RequestId::parse(id).unwrap()).await.is_ok(),
            "acknowledged {id} is not in the database"
        );
    }
    assert!(matches!(
        audit::verify(store.all_audit_events().await.unwrap()),
        Verdict::Intact { .. }
    ));
    let live = broker.open_session("acme-ehr", "ito", &["echo"]).await;
    sekisho_e2e::echo_once(&live, "echo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cut_while_the_store_cannot_write_is_recorded_as_such_even_after_a_restart() {
    let echo = EchoServer::start().await;
    let mut broker =
        TestBroker::start(&[Vendor::new("acme-ehr").target("echo", echo.addr())]).await;
    let live = broker.open_session("acme-ehr", "tanaka", &["echo"]).await;
    sekisho_e2e::echo_once(&live, "echo").await;
    broker.break_audit_writes().await;
    // The forward cannot be put on the record: the session is cut, and its end cannot be
    // recorded either.
    forward_refused_and_session_cut(&live).await;
    // The broker stops before the store is back, and starts again once it is.
    broker.halt().await;
    broker.heal_audit_writes().await;
    broker.relaunch().await;
    let ends = broker.events_of(EventKind::SessionEnded).await;
    let reasons: Vec<&str> = ends
        .iter()
        .filter_map(|event| event.event.detail_value("reason"))
        .collect();
    assert_eq!(reasons, vec!["store-unavailable"], "{ends:?}");
}

/// The kernel turns the data directory's filesystem read-only (EROFS) under the broker, as it
/// does when a disk fails: requests are refused with a sentence, the live session ends, and
/// every request acknowledged before or after the moment is in the files. Nothing can be
/// written there again until the filesystem is unmounted and checked (the hospital IT's work,
/// and a restart), so the files are read from a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_turned_read_only_refuses_and_loses_nothing_acknowledged() {
    if stores::postgres_selected() {
        eprintln!(
            "a_disk_turned_read_only: skipped on PostgreSQL (a SQLite file on a failing disk is the test)"
        );
        return;
    }
    let disk = match FailingDisk::mount(64) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!(
                "a_disk_turned_read_only: skipped, a loop-mounted ext4 cannot be made here ({why}); CI runs it as root"
            );
            return;
        }
    };
    let echo = EchoServer::start().await;
    let broker = broker_in(disk.path(), &echo).await;
    let (mut load, _) = Load::start(&broker).await;

    disk.fail();
    refuses_and_cuts(&mut load.progress, &load.live).await;
    let asked = load.stop().await;

    // What the files hold: the database and its write-ahead log, copied off the disk.
    let copy = tempfile::tempdir().unwrap();
    for name in ["sekisho.db", "sekisho.db-wal"] {
        let from = disk.path().join("data").join(name);
        if from.exists() {
            std::fs::copy(&from, copy.path().join(name)).unwrap();
        }
    }
    let store = Store::open(&StoreLocation::Sqlite(copy.path().join("sekisho.db")))
        .await
        .unwrap();
    acknowledged_are_on_the_record(&store, &asked.acknowledged).await;
    drop(broker);
}
