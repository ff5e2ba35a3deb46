//! Conditions that only move when something changed.
//!
//! A condition's `lastTransitionTime` changes only when its status flips, and nothing in a
//! condition changes from one reconcile to the next unless the world did — so an unchanged
//! status compares equal and its write is skipped.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";

/// What a controller decides about one condition; turned into a `Condition` by [`merge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self { type_: type_.into(), status, reason: reason.into(), message: message.into() }
    }
    pub fn ok(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, true, reason, message)
    }
    pub fn fail(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, false, reason, message)
    }
}

/// The conditions to write: `desired` in order, each keeping the `lastTransitionTime` of the
/// `existing` condition of the same type when its status did not flip. `now` stamps flips.
pub fn merge(existing: &[Condition], desired: &[Cond], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let last_transition_time = existing
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.clone(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether condition `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// The current time as a Kubernetes `Time`, truncated to seconds (what the API server stores),
/// so a written condition reads back equal.
pub fn now() -> Time {
    let ts = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let first = merge(&[], &[Cond::fail(READY, "Pending", "waiting")], Some(1), &t(100));
        assert_eq!(first[0].last_transition_time, t(100));

        // Same status, new reason and message: the time stays.
        let same = merge(&first, &[Cond::fail(READY, "Other", "still waiting")], Some(2), &t(200));
        assert_eq!(same[0].last_transition_time, t(100));
        assert_eq!(same[0].reason, "Other");

        // Flip: the time moves.
        let flipped = merge(&same, &[Cond::ok(READY, "Ready", "ok")], Some(2), &t(300));
        assert_eq!(flipped[0].last_transition_time, t(300));
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn an_unchanged_decision_gives_an_equal_status() {
        let desired = [Cond::ok(READY, "Ready", "ok"), Cond::ok("AccessReady", "Bound", "2 bindings")];
        let a = merge(&[], &desired, Some(3), &t(100));
        let b = merge(&a, &desired, Some(3), &t(999));
        assert_eq!(a, b, "a no-op reconcile produces exactly the status already there");
    }

    #[test]
    fn removed_conditions_disappear() {
        let a = merge(&[], &[Cond::ok(READY, "R", ""), Cond::ok("QuotaReady", "Q", "")], None, &t(1));
        let b = merge(&a, &[Cond::ok(READY, "R", "")], None, &t(2));
        assert_eq!(b.len(), 1);
        assert!(is_true(&b, READY));
        assert!(find(&b, "QuotaReady").is_none());
    }
}
