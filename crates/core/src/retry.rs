//! Upstream's `retry`: call a check once a second until it holds or time runs out.
//!
//! Semantics of upstream's `machine/__init__.py`: attempts while less than `timeout` has
//! passed, one second apart; then one last attempt (`last_try`); if that fails too, the error
//! `action timed out after X.XX seconds (timeout=T)`, where X counts the last attempt too and T
//! is the timeout's `total_seconds()` (a float: `900.0`).
//!
//! The policy is [`Retry`], a schedule of attempts; [`retry`] drives it for async checks, and
//! the Python bindings drive the same schedule for checks that are Python code (the `retry()`
//! global, `wait_for_window`, `wait_until_tty_matches`), which must run on the script's thread.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The pause between attempts.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// A retried check ran out of time.
#[derive(Debug, Clone, thiserror::Error)]
#[error("action timed out after {:.2} seconds (timeout={:?})", elapsed.as_secs_f64(), timeout.as_secs_f64())]
pub struct TimedOut {
    /// How long the attempts took.
    pub elapsed: Duration,
    /// The budget that was given.
    pub timeout: Duration,
}

/// The schedule of a retried check: which attempt comes next, and the error once none is left.
/// Pause [`INTERVAL`] after every attempt but the last.
#[derive(Debug, Clone)]
pub struct Retry {
    start: Instant,
    timeout: Duration,
    last_try_done: bool,
}

impl Retry {
    /// A schedule of `timeout`, starting now.
    pub fn new(timeout: Duration) -> Retry {
        Retry { start: Instant::now(), timeout, last_try_done: false }
    }

    /// The next attempt, as its `last_try` flag: `false` while time is left, then `true` once,
    /// then `None`.
    pub fn next_attempt(&mut self) -> Option<bool> {
        if self.start.elapsed() < self.timeout {
            Some(false)
        } else if self.last_try_done {
            None
        } else {
            self.last_try_done = true;
            Some(true)
        }
    }

    /// The error for a check that never held.
    pub fn timed_out(&self) -> TimedOut {
        TimedOut { elapsed: self.start.elapsed(), timeout: self.timeout }
    }
}

/// Run `check(last_try)` until it returns `Ok(true)`, on the [`Retry`] schedule of `timeout`.
/// An `Err` from the check stops the retrying at once and is returned.
pub async fn retry<F, Fut, E>(timeout: Duration, mut check: F) -> Result<Result<(), TimedOut>, E>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<bool, E>>,
{
    let mut schedule = Retry::new(timeout);
    while let Some(last_try) = schedule.next_attempt() {
        if check(last_try).await? {
            return Ok(Ok(()));
        }
        if !last_try {
            tokio::time::sleep(INTERVAL).await;
        }
    }
    Ok(Err(schedule.timed_out()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_once_a_second_then_one_last_try() {
        let mut tries = Vec::new();
        let result: Result<_, ()> = retry(Duration::from_secs(3), |last| {
            tries.push(last);
            async { Ok(false) }
        })
        .await;
        let err = result.expect("check never errs").expect_err("never holds");
        assert_eq!(tries, vec![false, false, false, true]);
        assert_eq!(err.to_string(), "action timed out after 3.00 seconds (timeout=3.0)");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_check_holds_or_errs() {
        let mut n = 0;
        let ok: Result<_, ()> = retry(Duration::from_secs(60), |_| {
            n += 1;
            let done = n == 2;
            async move { Ok(done) }
        })
        .await;
        assert!(ok.expect("no error").is_ok());
        assert_eq!(n, 2);
        let err: Result<Result<(), TimedOut>, &str> = retry(Duration::from_secs(60), |_| async { Err("boom") }).await;
        assert_eq!(err.expect_err("error passes through"), "boom");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_timeout_tries_once() {
        let mut n = 0;
        let result: Result<_, ()> = retry(Duration::ZERO, |_| {
            n += 1;
            async { Ok(false) }
        })
        .await;
        assert!(result.expect("no error").is_err());
        assert_eq!(n, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_schedule_ends_after_its_last_try() {
        let mut schedule = Retry::new(Duration::from_secs(1));
        assert_eq!(schedule.next_attempt(), Some(false));
        tokio::time::sleep(INTERVAL).await;
        assert_eq!(schedule.next_attempt(), Some(true));
        assert_eq!(schedule.next_attempt(), None);
        assert_eq!(schedule.timed_out().to_string(), "action timed out after 1.00 seconds (timeout=1.0)");
    }
}
