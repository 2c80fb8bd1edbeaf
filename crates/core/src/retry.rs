//! Upstream's `retry`: call a check once a second until it holds or time runs out.
//!
//! Semantics of the newest version on nixpkgs master (`machine/__init__.py`): attempts while
//! less than `timeout` has passed, one second apart; then one last attempt (`last_try`); if
//! that fails too, the error `action timed out after X.XX seconds (timeout=T)`, where X counts
//! the last attempt too and T is the timeout's `total_seconds()` (a float: `900.0`).

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

/// Run `check(last_try)` until it returns `Ok(true)`, once per [`INTERVAL`], for `timeout`.
/// An `Err` from the check stops the retrying at once and is returned.
pub async fn retry<F, Fut, E>(timeout: Duration, mut check: F) -> Result<Result<(), TimedOut>, E>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<bool, E>>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check(false).await? {
            return Ok(Ok(()));
        }
        tokio::time::sleep(INTERVAL).await;
    }
    if check(true).await? {
        return Ok(Ok(()));
    }
    Ok(Err(TimedOut { elapsed: start.elapsed(), timeout }))
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
}
