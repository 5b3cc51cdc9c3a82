//! The broker's clock, as an argument.
//!
//! Two readings: the wall clock ([`Clock::now`]), which is what the record says and what
//! approvers and policies speak of (end times, allowed hours, timestamps), and a monotonic
//! clock ([`Clock::instant`]), which is what the broker waits on. A deadline is fixed on the
//! wall clock once (an approval's end time) and from then on run on the monotonic clock
//! ([`Clock::deadline_for`]), so setting the host's clock back or forward while a session runs
//! neither lengthens nor shortens it; [`crate::timewatch`] records such a step.
//!
//! Nothing decides against `SystemTime::now()` or `Instant::now()` directly, so a test can
//! hand the broker a [`ManualClock`] and move time forward to an end time without waiting for
//! it, or step its wall clock alone as an administrator (or a broken NTP) would. QUIC's own
//! timers (idle timeout, keep-alive) still run on real time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A future the clock returns.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the broker gets the time.
pub trait Clock: Send + Sync + 'static {
    /// The wall-clock time: what is recorded and shown.
    fn now(&self) -> SystemTime;
    /// The monotonic time: never steps when the wall clock is set.
    fn instant(&self) -> Instant;
    /// Resolves at (or soon after) the monotonic `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Sleep;

    /// Both readings at one moment, for comparing how far each has moved
    /// ([`crate::timewatch`]). A clock whose readings can move between two calls (a test's)
    /// takes both at once.
    fn readings(&self) -> (SystemTime, Instant) {
        (self.now(), self.instant())
    }

    /// The monotonic moment at which the wall clock, as it reads now, reaches `at`: a
    /// deadline fixed on the wall clock, from here on immune to the wall clock being set.
    fn deadline_for(&self, at: SystemTime) -> Instant {
        let left = at.duration_since(self.now()).unwrap_or(Duration::ZERO);
        self.instant() + left
    }
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

/// A clock that moves only when told to: for tests.
///
/// [`advance`](ManualClock::advance) moves both readings, as time passing does;
/// [`step_wall`](ManualClock::step_wall) moves the wall clock alone, as setting the host's
/// clock does.
#[derive(Debug, Clone)]
pub struct ManualClock {
    readings: Arc<Mutex<Readings>>,
    /// The monotonic reading's origin: a real instant, so readings compare with real ones.
    origin: Instant,
    /// How far the monotonic reading has moved from `origin`; sleepers wait on it.
    moved: watch::Sender<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Readings {
    wall: SystemTime,
    since_origin: Duration,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> ManualClock {
        ManualClock {
            readings: Arc::new(Mutex::new(Readings {
                wall: start,
                since_origin: Duration::ZERO,
            })),
            origin: Instant::now(),
            moved: watch::Sender::new(Duration::ZERO),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Readings> {
        self.readings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves time forward by `by` (both readings), waking every sleeper whose deadline has
    /// come.
    pub fn advance(&self, by: Duration) {
        let since_origin = {
            let mut readings = self.locked();
            readings.wall += by;
            readings.since_origin += by;
            readings.since_origin
        };
        self.moved.send_replace(since_origin);
    }

    /// Sets the wall clock forward (`ahead`) or back by `by`, leaving the monotonic reading
    /// where it is: what an administrator or a misbehaving time service does to the host.
    pub fn step_wall(&self, by: Duration, ahead: bool) {
        let mut readings = self.locked();
        readings.wall = if ahead {
            readings.wall + by
        } else {
            readings.wall - by
        };
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.locked().wall
    }

    fn instant(&self) -> Instant {
        self.origin + self.locked().since_origin
    }

    fn readings(&self) -> (SystemTime, Instant) {
        let readings = self.locked();
        (readings.wall, self.origin + readings.since_origin)
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let mut moved = self.moved.subscribe();
        let due = deadline.saturating_duration_since(self.origin);
        Box::pin(async move {
            // `wait_for` checks the current value first, so a deadline already passed
            // resolves at once.
            let _ = moved.wait_for(|since_origin| *since_origin >= due).await;
        })
    }
}

/// Milliseconds since the Unix epoch, as stored in the database.
pub fn to_unix_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The time a stored millisecond count stands for.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Seconds since the Unix epoch, as sent on the wire.
pub fn to_unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_moved_past_their_deadline() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = ManualClock::new(start);
        let deadline = clock.deadline_for(start + Duration::from_secs(60));
        let sleeper = tokio::spawn(clock.sleep_until(deadline));
        clock.advance(Duration::from_secs(59));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now(), start + Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_deadline_fixed_on_the_wall_clock_ignores_later_steps_of_it() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = ManualClock::new(start);
        let deadline = clock.deadline_for(start + Duration::from_secs(60));
        // Set back an hour: the deadline does not move an hour later.
        clock.step_wall(Duration::from_secs(3600), false);
        let sleeper = tokio::spawn(clock.sleep_until(deadline));
        clock.advance(Duration::from_secs(60));
        sleeper.await.unwrap();
        // Set forward an hour: the deadline does not come at once.
        let deadline = clock.deadline_for(clock.now() + Duration::from_secs(60));
        clock.step_wall(Duration::from_secs(3600), true);
        let sleeper = tokio::spawn(clock.sleep_until(deadline));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(60));
        sleeper.await.unwrap();
    }

    #[test]
    fn milliseconds_round_trip() {
        let time = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        assert_eq!(from_unix_ms(to_unix_ms(time)), time);
    }
}
