//! The cluster-scoped objects the operator puts in place when it starts (workspace roles,
//! PriorityClasses, `defaultinstancetype`): tried until done, in the background, so a missing
//! permission or a slow API server delays them without stopping the controllers.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::backoff::Backoff;

/// Runs `attempt` until it succeeds, backing off from 1 s to 60 s between tries, or until
/// `shutdown`. `attempt` returns how many objects it wrote (0: all were in place).
pub async fn until_done<F, Fut>(what: &'static str, shutdown: CancellationToken, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<usize>>,
{
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        match attempt().await {
            Ok(0) => return,
            Ok(written) => {
                info!(what, written, "installed");
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay(what);
                warn!(what, error = %e, retry_in = ?delay, "could not install; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retries_until_it_succeeds_and_stops_on_shutdown() {
        let tries = AtomicUsize::new(0);
        until_done("thing", CancellationToken::new(), || async {
            if tries.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(kube::Error::LinesCodecMaxLineLengthExceeded)
            } else {
                Ok(1)
            }
        })
        .await;
        assert_eq!(tries.load(Ordering::SeqCst), 3);

        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let tries = AtomicUsize::new(0);
        until_done("never", shutdown, || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<usize, _>(kube::Error::LinesCodecMaxLineLengthExceeded)
        })
        .await;
        assert_eq!(tries.load(Ordering::SeqCst), 1, "a cancelled shutdown ends the retries");
    }
}
