//! Password hashing, bounded.
//!
//! argon2id is slow and memory-hard on purpose (19 MiB and tens of milliseconds per hash).
//! That is what makes a stolen hash expensive to guess, and what would let a flood of login
//! attempts take the broker's memory and its runtime threads. So every hash and verification
//! in the process runs here, on [`RUNNING`] threads of its own (never on the async runtime),
//! with at most [`WAITING`] more queued; beyond that the attempt is refused at once
//! ([`StaffError::Busy`]), before any hashing.
//!
//! Each hashing thread keeps its argon2 work area for its life (see `with_work_area` in the
//! parent module): allocating and freeing 19 MiB per hash made the C allocator's heap grow
//! (measured: +235 MiB after twenty hashes). So what hashing holds is `RUNNING × 19 MiB`,
//! whatever arrives.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::oneshot;

use super::StaffError;

/// Hashes computed at once (each on a thread of its own).
pub const RUNNING: usize = 2;
/// Hashes waiting for their turn; more are refused.
pub const WAITING: usize = 32;

type Job = Box<dyn FnOnce() + Send>;

static QUEUE: LazyLock<SyncSender<Job>> = LazyLock::new(|| {
    let (queue, jobs) = sync_channel::<Job>(WAITING);
    let jobs = Arc::new(Mutex::new(jobs));
    for n in 0..RUNNING {
        let jobs = jobs.clone();
        let started = std::thread::Builder::new()
            .name(format!("sekisho-hash-{n}"))
            .spawn(move || work(&jobs));
        if let Err(e) = started {
            // With no thread at all the queue's receiver is gone and every attempt says so.
            tracing::error!(error = %e, "cannot start a password-hashing thread");
        }
    }
    queue
});

fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let jobs = jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            jobs.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Runs `work` (a hash or a verification) when its turn comes; refused at once when the
/// queue is full.
async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StaffError> {
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(work());
    });
    match QUEUE.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(StaffError::Busy),
        Err(TrySendError::Disconnected(_)) => {
            return Err(StaffError::Crypto(
                "no password-hashing thread is running".into(),
            ));
        }
    }
    answered
        .await
        .map_err(|_| StaffError::Crypto("password hashing stopped".into()))
}

/// Whether `password` matches `hash`, computed in its turn.
pub async fn verify(hash: &str, password: &str) -> Result<bool, StaffError> {
    let (hash, password) = (hash.to_owned(), password.to_owned());
    run(move || super::verify_password(&hash, &password)).await
}

/// Costs what a verification costs, for a name that has no account (so timing does not tell
/// which names exist); the stand-in hash is made on first use, on a hashing thread.
pub async fn verify_unknown(password: &str) -> Result<(), StaffError> {
    let password = password.to_owned();
    run(move || {
        let _ = super::verify_password(super::dummy_hash(), &password);
    })
    .await
}

/// The argon2id hash of `password`, computed in its turn.
pub async fn hash(password: &str) -> Result<String, StaffError> {
    let password = password.to_owned();
    run(move || super::hash_password(&password)).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_verifications_is_refused_beyond_the_queue_not_hashed() {
        let hash = super::super::hash_password("correct horse battery").unwrap();
        let attempts: Vec<_> = (0..RUNNING + WAITING + 40)
            .map(|_| {
                let hash = hash.clone();
                tokio::spawn(async move { verify(&hash, "wrong horse battery").await })
            })
            .collect();
        let mut refused = 0;
        let mut checked = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(false) => checked += 1,
                Err(StaffError::Busy) => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(refused >= 40, "{refused} refused, {checked} checked");
        assert!(checked >= RUNNING, "{refused} refused, {checked} checked");
        // Once the flood is over, the next one is checked.
        assert!(verify(&hash, "correct horse battery").await.unwrap());
    }

    fn resident_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmRSS:"))
                    .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_hashes_leave_no_more_memory_than_the_threads_work_areas() {
        let hash = super::super::hash_password("a long enough password").unwrap();
        let _ = verify(&hash, "warm up both threads").await;
        let _ = verify(&hash, "warm up both threads").await;
        let before = resident_kib();
        for _ in 0..3 {
            let rounds: Vec<_> = (0..RUNNING * 4)
                .map(|_| {
                    let hash = hash.clone();
                    tokio::spawn(async move { verify(&hash, "nope").await })
                })
                .collect();
            for round in rounds {
                let _ = round.await;
            }
        }
        let grown = resident_kib().saturating_sub(before);
        // At most the work areas not touched yet (19 MiB each) and some slack; not 19 MiB a
        // hash.
        assert!(grown < 64 * 1024, "grew by {grown} KiB");
    }
}
