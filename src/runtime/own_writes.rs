//! Not acting on a cached object older than the controller's own last status write.
//!
//! A status write and the watch event that brings it back into the cache are a moment apart. A
//! reconcile that runs in between (a child's event arrived meanwhile) sees the object as it was
//! before the write, computes the same status again with a new transition time and writes it a
//! second time, with a second Event. So after a status write the object's resourceVersion at the
//! time (the version the write was based on) is remembered, and while the cache still holds that
//! version a reconcile is put off: the write's own watch event triggers the next one, on a fresh
//! object. The same idea as the "expectations" of Kubernetes' own controllers. Versions are only
//! compared for equality, as the API allows. An entry lapses after [`GRACE`], so a lost watch
//! event delays a reconcile at most that long.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::Resource;

/// The longest a reconcile is put off waiting for the cache to catch up with a write.
pub const GRACE: Duration = Duration::from_secs(5);

/// Entries beyond this many are swept of lapsed ones (objects deleted before their next reconcile).
const SWEEP_ABOVE: usize = 1024;

/// The status writes whose watch events the cache may not have delivered yet, by object uid.
#[derive(Default)]
pub struct OwnWrites {
    written: Mutex<HashMap<String, Written>>,
}

struct Written {
    /// The resourceVersion the write was based on: the cache is stale while it still shows it.
    based_on: String,
    at: Instant,
}

impl OwnWrites {
    /// Records that the status of `obj`, as of its resourceVersion, was just written.
    pub fn wrote<K: Resource>(&self, obj: &K) {
        self.wrote_at(obj, Instant::now());
    }

    /// How long to put off reconciling `obj`: `Some` while the cache still holds the version an
    /// own write was based on, `None` when it is fresh (or the wait has lapsed).
    pub fn stale<K: Resource>(&self, obj: &K) -> Option<Duration> {
        self.stale_at(obj, Instant::now())
    }

    fn wrote_at<K: Resource>(&self, obj: &K, now: Instant) {
        let meta = obj.meta();
        let (Some(uid), Some(version)) = (meta.uid.clone(), meta.resource_version.clone()) else { return };
        let mut written = self.written.lock().expect("own writes lock");
        if written.len() > SWEEP_ABOVE {
            written.retain(|_, w| now.duration_since(w.at) < GRACE);
        }
        written.insert(uid, Written { based_on: version, at: now });
    }

    fn stale_at<K: Resource>(&self, obj: &K, now: Instant) -> Option<Duration> {
        let meta = obj.meta();
        let uid = meta.uid.as_deref()?;
        let mut written = self.written.lock().expect("own writes lock");
        let w = written.get(uid)?;
        let left = GRACE.saturating_sub(now.duration_since(w.at));
        if meta.resource_version.as_deref() == Some(w.based_on.as_str()) && !left.is_zero() {
            return Some(left);
        }
        written.remove(uid);
        None
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.written.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn object(uid: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("a".into()),
                uid: Some(uid.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_version_a_write_was_based_on_is_stale_until_the_cache_moves_on() {
        let own = OwnWrites::default();
        let t0 = Instant::now();
        own.wrote_at(&object("u1", "10"), t0);
        let left = own.stale_at(&object("u1", "10"), t0 + Duration::from_secs(1));
        assert_eq!(left, Some(GRACE - Duration::from_secs(1)));
        // The write's own event arrived: fresh, and the entry is gone.
        assert_eq!(own.stale_at(&object("u1", "11"), t0 + Duration::from_secs(1)), None);
        assert_eq!(own.len(), 0);
        assert_eq!(own.stale_at(&object("u1", "10"), t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn other_objects_and_lapsed_writes_are_not_stale() {
        let own = OwnWrites::default();
        let t0 = Instant::now();
        own.wrote_at(&object("u1", "10"), t0);
        assert_eq!(own.stale_at(&object("u2", "10"), t0), None);
        assert_eq!(own.stale_at(&object("u1", "10"), t0 + GRACE), None);
        assert_eq!(own.len(), 0);
    }

    #[test]
    fn an_object_without_a_uid_or_version_is_never_held_back() {
        let own = OwnWrites::default();
        let mut bare = object("u1", "10");
        bare.metadata.resource_version = None;
        own.wrote_at(&bare, Instant::now());
        assert_eq!(own.len(), 0);
        assert_eq!(own.stale_at(&bare, Instant::now()), None);
    }

    #[test]
    fn lapsed_entries_are_swept_when_there_are_many() {
        let own = OwnWrites::default();
        let t0 = Instant::now();
        for i in 0..=SWEEP_ABOVE {
            own.wrote_at(&object(&format!("old-{i}"), "1"), t0);
        }
        own.wrote_at(&object("new", "1"), t0 + GRACE);
        assert_eq!(own.len(), 1);
    }
}
