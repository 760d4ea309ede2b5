//! Retrying through transient failures for a bounded time: the store may be down for a
//! minute, throttle, or drop connections, and an operation that would lose a restore or
//! end recovery by failing at once waits it out instead, up to a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long to keep trying, and how long to wait between attempts (doubling).
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Total time for all attempts; once it has passed the last error is returned.
    pub total: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Patience {
    pub fn new(total: Duration) -> Patience {
        Patience { total, first_delay: Duration::from_millis(500), max_delay: Duration::from_secs(15) }
    }
}

/// Why [`patiently`] returned no result.
#[derive(Debug)]
pub enum Failed<E> {
    /// An error that waiting will not heal.
    Permanent(E),
    /// Transient errors went on past the deadline.
    GaveUp { attempts: u32, waited: Duration, last: E },
}

/// Runs `attempt` until it succeeds, fails with an error `transient` rejects, or
/// `patience.total` has passed. Each attempt is cut off at the deadline (its error is then
/// `timed_out()`), so a store that does not answer cannot hold the caller past it.
/// `on_retry` hears of each failed attempt and the wait before the next one.
pub async fn patiently<T, E, Fut>(
    patience: Patience,
    mut attempt: impl FnMut() -> Fut,
    transient: impl Fn(&E) -> bool,
    timed_out: impl Fn() -> E,
    on_retry: &mut (dyn FnMut(&E, Duration) + Send),
) -> Result<T, Failed<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    // "Retry for ever" given as a huge number must not overflow the clock.
    let deadline = started.checked_add(patience.total).unwrap_or(started + Duration::from_secs(100 * 365 * 86_400));
    let mut delay = patience.first_delay;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(remaining, attempt()).await {
            Ok(Ok(output)) => return Ok(output),
            Ok(Err(e)) if !transient(&e) => return Err(Failed::Permanent(e)),
            Ok(Err(e)) => e,
            Err(_) => timed_out(),
        };
        if Instant::now() + delay >= deadline {
            return Err(Failed::GaveUp { attempts, waited: started.elapsed(), last: error });
        }
        on_retry(&error, delay);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(patience.max_delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(total_ms: u64) -> Patience {
        Patience {
            total: Duration::from_millis(total_ms),
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success_with_growing_waits() {
        let mut calls = 0;
        let mut waits = Vec::new();
        let result: Result<u32, Failed<&str>> = patiently(
            quick(5_000),
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 5 {
                        Err("503")
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| true,
            || "timeout",
            &mut |_, wait| waits.push(wait.as_millis()),
        )
        .await;
        assert_eq!(result.unwrap(), 5);
        assert_eq!(waits, [10, 20, 40, 40]);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried_and_the_deadline_bounds_everything() {
        let permanent: Result<(), _> =
            patiently(quick(5_000), || async { Err("corrupt") }, |e| *e != "corrupt", || "timeout", &mut |_, _| {})
                .await;
        assert!(matches!(permanent, Err(Failed::Permanent("corrupt"))));

        // An attempt that never answers is cut off at the deadline.
        let started = Instant::now();
        let hung: Result<(), Failed<&str>> =
            patiently(quick(200), std::future::pending::<Result<(), &str>>, |_| true, || "no answer", &mut |_, _| {})
                .await;
        assert!(matches!(hung, Err(Failed::GaveUp { last: "no answer", .. })), "{hung:?}");
        assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
    }
}
