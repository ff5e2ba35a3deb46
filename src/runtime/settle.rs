//! Coalescing of status writes that only report progress.
//!
//! While children come up, an object's status changes many times (a pod created, a pod ready, the
//! next component waiting), each a write to the API server that nobody acts on. A change people
//! and tools do act on is written at once: a condition flipping (`Ready` becoming True), a failure
//! reason, a new generation observed. A change that only reports progress waits until the status
//! has been still for [`QUIET`] (at most [`MAX_DELAY`] after the first such change), so a status
//! that is still moving is written once it settles rather than at every step.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Serialize;

/// How long a progress-only status must stay unchanged before it is written.
pub const QUIET: Duration = Duration::from_secs(5);
/// The longest a progress-only change waits, however often the status moves.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// How soon a status change must reach the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// Write now: a condition flipped, a failure appeared, a new generation was observed.
    Now,
    /// Only progress: may wait for the status to settle.
    Progress,
}

/// The urgency of going from `current` to `desired` (observed generation and conditions).
/// `progress_reasons` are the reasons of a `False` condition that mean "on its way" rather than
/// "something is wrong" (e.g. `DeploymentNotReady`).
pub fn urgency(
    current: Option<(Option<i64>, &[Condition])>,
    desired: (Option<i64>, &[Condition]),
    progress_reasons: &[&str],
) -> Urgency {
    let failing = |c: &Condition| c.status != "True" && !progress_reasons.contains(&c.reason.as_str());
    let Some((generation, conditions)) = current else {
        // A first status: urgent only when it has news (done already, or a problem).
        let done = desired.1.iter().all(|c| c.status == "True");
        return if done || desired.1.iter().any(failing) { Urgency::Now } else { Urgency::Progress };
    };
    if generation != desired.0 {
        return Urgency::Now;
    }
    for want in desired.1 {
        match conditions.iter().find(|c| c.type_ == want.type_) {
            None => return Urgency::Now,
            Some(have) if have.status != want.status => return Urgency::Now,
            Some(have) if have.reason != want.reason && failing(want) => return Urgency::Now,
            Some(_) => {}
        }
    }
    Urgency::Progress
}

/// A digest of a status that ignores condition transition times (a first status gets a new one
/// on every reconcile until it is written).
pub fn digest<S: Serialize>(status: &S) -> u64 {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("lastTransitionTime");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(status).unwrap_or_default();
    strip(&mut value);
    let mut hasher = DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// What to do with a status change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Write,
    /// Reconcile again after this long and decide then.
    Wait(Duration),
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    digest: u64,
    changed: Instant,
    since: Instant,
}

/// Progress-only status changes not yet written, per object.
#[derive(Default)]
pub struct Settle {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Settle {
    /// Decides whether the status change of the object `key` (its uid) to a status with
    /// `digest` is written now.
    pub fn decide(&self, key: &str, urgency: Urgency, digest: u64, now: Instant) -> Decision {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if urgency == Urgency::Now {
            pending.remove(key);
            return Decision::Write;
        }
        // Objects deleted while a change waited leave an entry behind: drop the stale ones.
        if pending.len() > 1024 {
            pending.retain(|_, p| now.saturating_duration_since(p.since) < MAX_DELAY * 4);
        }
        let entry = pending.entry(key.to_owned()).or_insert(Pending { digest, changed: now, since: now });
        if entry.digest != digest {
            entry.digest = digest;
            entry.changed = now;
        }
        let still = now.saturating_duration_since(entry.changed);
        let waited = now.saturating_duration_since(entry.since);
        if still >= QUIET || waited >= MAX_DELAY {
            pending.remove(key);
            Decision::Write
        } else {
            Decision::Wait((QUIET - still).min(MAX_DELAY - waited))
        }
    }

    /// The object's status is as desired (or it is gone): nothing waits.
    pub fn forget(&self, key: &str) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const PROGRESS: &[&str] = &["DeploymentNotReady", "RouterNotReady"];

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn flips_failures_and_new_generations_are_urgent_progress_is_not() {
        let not_ready = [cond("Ready", "False", "DeploymentNotReady")];
        let router = [cond("Ready", "False", "RouterNotReady")];
        let ready = [cond("Ready", "True", "Serving")];
        let pull = [cond("Ready", "False", "ImagePullBackOff")];
        // First statuses.
        assert_eq!(urgency(None, (Some(1), &not_ready), PROGRESS), Urgency::Progress);
        assert_eq!(urgency(None, (Some(1), &ready), PROGRESS), Urgency::Now);
        assert_eq!(urgency(None, (Some(1), &pull), PROGRESS), Urgency::Now);
        // Changes.
        assert_eq!(urgency(Some((Some(1), &not_ready)), (Some(1), &router), PROGRESS), Urgency::Progress);
        assert_eq!(urgency(Some((Some(1), &not_ready)), (Some(1), &not_ready), PROGRESS), Urgency::Progress);
        assert_eq!(urgency(Some((Some(1), &router)), (Some(1), &ready), PROGRESS), Urgency::Now);
        assert_eq!(urgency(Some((Some(1), &ready)), (Some(1), &router), PROGRESS), Urgency::Now);
        assert_eq!(urgency(Some((Some(1), &not_ready)), (Some(1), &pull), PROGRESS), Urgency::Now);
        assert_eq!(urgency(Some((Some(1), &ready)), (Some(2), &ready), PROGRESS), Urgency::Now);
        assert_eq!(urgency(Some((Some(1), &[])), (Some(1), &ready), PROGRESS), Urgency::Now);
    }

    #[test]
    fn a_moving_status_waits_until_still_and_never_longer_than_the_cap() {
        let settle = Settle::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(settle.decide("a", Urgency::Progress, 1, at(0)), Decision::Wait(QUIET));
        // Unchanged for less than QUIET: wait for the rest.
        assert_eq!(settle.decide("a", Urgency::Progress, 1, at(3)), Decision::Wait(Duration::from_secs(2)));
        // Changed: the quiet period starts again.
        assert_eq!(settle.decide("a", Urgency::Progress, 2, at(4)), Decision::Wait(QUIET));
        assert_eq!(settle.decide("a", Urgency::Progress, 2, at(9)), Decision::Write);
        // Written: a later change starts afresh.
        assert_eq!(settle.decide("a", Urgency::Progress, 3, at(10)), Decision::Wait(QUIET));
        // Always moving: written at the cap.
        for s in 11..40 {
            assert_ne!(settle.decide("a", Urgency::Progress, 100 + s, at(s)), Decision::Write, "written at {s}");
        }
        assert_eq!(settle.decide("a", Urgency::Progress, 999, at(40)), Decision::Write);
        // Urgent changes never wait, and clear what was pending.
        assert_eq!(settle.decide("b", Urgency::Progress, 1, at(0)), Decision::Wait(QUIET));
        assert_eq!(settle.decide("b", Urgency::Now, 2, at(1)), Decision::Write);
        assert_eq!(settle.decide("b", Urgency::Progress, 3, at(2)), Decision::Wait(QUIET));
    }

    #[test]
    fn the_digest_ignores_transition_times_only() {
        let mut a = cond("Ready", "False", "DeploymentNotReady");
        let b = a.clone();
        a.last_transition_time = Time(jiff::Timestamp::from_second(99).unwrap());
        assert_eq!(digest(&a), digest(&b));
        a.message = "x".into();
        assert_ne!(digest(&a), digest(&b));
    }
}
