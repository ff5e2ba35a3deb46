//! Per-deployment concurrency limit with a bounded, first-come-first-served wait queue.
//!
//! A deployment serves at most `instances × maxConcurrentRequestsPerInstance` requests at once.
//! Further requests wait in a queue that holds at most as many requests as the limit, each for at
//! most `maxQueueWaitMs`; past either bound they are refused (429) rather than piling up in memory
//! and timing out later. The limit changes when the configuration does (instances scale) without
//! disturbing the requests already admitted, which is why this is a small mutex-protected counter
//! rather than a semaphore, whose permits cannot be taken back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The queue already holds as many requests as the limit (or waiting is disabled).
    QueueFull,
    /// No slot became free within the maximum wait.
    QueueTimeout,
    /// The limit is zero: the deployment has no instances.
    NoCapacity,
}

/// Admission control for one deployment.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
    in_flight_gauge: Gauge,
    queued_gauge: Gauge,
}

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    waiters: VecDeque<Waiter>,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

/// A slot held by one request; dropping it frees the slot for the next waiter.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
}

impl Limiter {
    /// A limiter admitting `limit` requests at once, reporting to the given gauges.
    pub fn new(limit: usize, in_flight_gauge: Gauge, queued_gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State { limit, in_flight: 0, waiters: VecDeque::new(), next_id: 0 }),
            in_flight_gauge,
            queued_gauge,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is a few integer
        // operations done before anything that could panic.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the limit. Requests in flight keep their slots; a raised limit admits waiters at once,
    /// a lowered one takes effect as slots are freed.
    pub fn set_limit(&self, limit: usize) {
        let mut state = self.lock();
        state.limit = limit;
        self.grant_waiters(&mut state);
    }

    /// Requests currently admitted.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Requests currently waiting.
    pub fn queued(&self) -> usize {
        self.lock().waiters.len()
    }

    /// A slot if one is free now and nobody is waiting for it; never waits.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut state = self.lock();
        (state.in_flight < state.limit && state.waiters.is_empty()).then(|| self.admit(&mut state))
    }

    /// A slot, waiting at most `max_wait` for one.
    pub async fn acquire(self: &Arc<Self>, max_wait: Duration) -> Result<Permit, Rejection> {
        let (granted, id) = {
            let mut state = self.lock();
            if state.in_flight < state.limit && state.waiters.is_empty() {
                return Ok(self.admit(&mut state));
            }
            if state.limit == 0 {
                return Err(Rejection::NoCapacity);
            }
            if max_wait.is_zero() || state.waiters.len() >= state.limit {
                return Err(Rejection::QueueFull);
            }
            let (grant, granted) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            state.waiters.push_back(Waiter { id, grant });
            self.queued_gauge.inc();
            (granted, id)
        };
        // Cleans up if this future is dropped (caller gone) or the wait times out.
        let mut wait = QueuedWait { limiter: self, id, granted, done: false };
        match tokio::time::timeout(max_wait, &mut wait.granted).await {
            Ok(Ok(())) => {
                wait.done = true;
                Ok(Permit { limiter: Arc::clone(self) })
            }
            // The sender is only dropped after sending or after removal by `QueuedWait` itself,
            // so this does not happen; treat it like an expired wait rather than panic.
            Ok(Err(_)) | Err(_) => Err(Rejection::QueueTimeout),
        }
    }

    fn admit(self: &Arc<Self>, state: &mut State) -> Permit {
        state.in_flight += 1;
        self.in_flight_gauge.inc();
        Permit { limiter: Arc::clone(self) }
    }

    fn release(&self, state: &mut State) {
        state.in_flight -= 1;
        self.in_flight_gauge.dec();
        self.grant_waiters(state);
    }

    /// Hands free slots to waiters in arrival order. A waiter that has gone away (its receiver is
    /// dropped) is skipped and the slot goes to the next one.
    fn grant_waiters(&self, state: &mut State) {
        while state.in_flight < state.limit {
            let Some(waiter) = state.waiters.pop_front() else { break };
            self.queued_gauge.dec();
            if waiter.grant.send(()).is_ok() {
                state.in_flight += 1;
                self.in_flight_gauge.inc();
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        self.limiter.release(&mut state);
    }
}

/// A request's place in the queue until it is granted a slot. It owns the receiving end of the
/// grant so that, while it is being dropped, a grant cannot be lost: either the entry is still
/// queued, or the grant was delivered to this receiver and counted.
struct QueuedWait<'a> {
    limiter: &'a Limiter,
    id: u64,
    granted: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for QueuedWait<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.limiter.lock();
        if let Some(pos) = state.waiters.iter().position(|w| w.id == self.id) {
            state.waiters.remove(pos);
            self.limiter.queued_gauge.dec();
        } else if self.granted.try_recv().is_ok() {
            // Granted between the timeout firing and this lock: the slot was counted for us, give
            // it back.
            self.limiter.release(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: usize) -> Arc<Limiter> {
        Limiter::new(limit, Gauge::default(), Gauge::default())
    }

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn admits_up_to_the_limit_then_queues_then_refuses() {
        let l = limiter(2);
        let a = l.acquire(LONG).await.unwrap();
        let _b = l.acquire(LONG).await.unwrap();
        assert!(l.try_acquire().is_none());

        let l2 = Arc::clone(&l);
        let c = tokio::spawn(async move { l2.acquire(LONG).await.map(|_p| ()) });
        let l3 = Arc::clone(&l);
        let d = tokio::spawn(async move { l3.acquire(LONG).await.map(|_p| ()) });
        while l.queued() < 2 {
            tokio::task::yield_now().await;
        }
        // Queue holds `limit` waiters.
        assert_eq!(l.acquire(LONG).await.unwrap_err(), Rejection::QueueFull);

        drop(a);
        assert_eq!(c.await.unwrap(), Ok(()));
        assert_eq!(d.await.unwrap(), Ok(()));
        assert_eq!((l.in_flight(), l.queued()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_times_out() {
        let l = limiter(1);
        let _a = l.acquire(LONG).await.unwrap();
        assert_eq!(l.acquire(Duration::from_millis(100)).await.unwrap_err(), Rejection::QueueTimeout);
        assert_eq!(l.acquire(Duration::ZERO).await.unwrap_err(), Rejection::QueueFull);
        assert_eq!((l.in_flight(), l.queued()), (1, 0));
    }

    #[tokio::test]
    async fn abandoned_waiters_leave_the_queue() {
        let l = limiter(1);
        let a = l.acquire(LONG).await.unwrap();
        let l2 = Arc::clone(&l);
        let waiter = tokio::spawn(async move { l2.acquire(LONG).await.map(|_p| ()) });
        while l.queued() < 1 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(l.queued(), 0);
        drop(a);
        assert_eq!(l.in_flight(), 0);
        assert!(l.try_acquire().is_some());
    }

    #[tokio::test]
    async fn limit_changes_apply_without_revoking_slots() {
        let l = limiter(1);
        let a = l.acquire(LONG).await.unwrap();
        let l2 = Arc::clone(&l);
        let waiter = tokio::spawn(async move { l2.acquire(LONG).await.map(|_p| ()) });
        while l.queued() < 1 {
            tokio::task::yield_now().await;
        }
        l.set_limit(2);
        assert_eq!(waiter.await.unwrap(), Ok(()));

        l.set_limit(0);
        assert_eq!(l.in_flight(), 1, "admitted requests keep their slot");
        assert_eq!(l.acquire(LONG).await.unwrap_err(), Rejection::NoCapacity);
        drop(a);
        assert_eq!(l.in_flight(), 0);
    }

    #[tokio::test]
    async fn gauges_follow_the_state() {
        let (in_flight, queued) = (Gauge::default(), Gauge::default());
        let l = Limiter::new(1, in_flight.clone(), queued.clone());
        let a = l.acquire(LONG).await.unwrap();
        let l2 = Arc::clone(&l);
        let waiter = tokio::spawn(async move { l2.acquire(LONG).await.map(|_p| ()) });
        while l.queued() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!((in_flight.get(), queued.get()), (1, 1));
        drop(a);
        waiter.await.unwrap().unwrap();
        assert_eq!((in_flight.get(), queued.get()), (0, 0));
    }
}
