//! API cost from the API server's audit log: the writes one user made in a window, by resource,
//! and the conflicts (409) among them.
//!
//! The benchmark cluster runs with `bench/audit-policy.yaml`, which records (at the Metadata
//! level) the requests of the operator's ServiceAccount that are not reads, so the log stays small.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// Writes by one user in a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Writes {
    /// Every write except the leader Lease's renewals.
    pub total: u64,
    /// Per `resource` or `resource/subresource`, Lease renewals included.
    pub by_resource: BTreeMap<String, u64>,
    /// Writes answered 409 Conflict.
    pub conflicts: u64,
    /// Writes to the leader Lease.
    pub lease: u64,
}

#[derive(Deserialize)]
struct Event {
    stage: String,
    verb: String,
    user: User,
    #[serde(rename = "objectRef", default)]
    object_ref: Option<ObjectRef>,
    #[serde(rename = "responseStatus", default)]
    response_status: Option<ResponseStatus>,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: Option<String>,
}

#[derive(Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

impl Writes {
    /// Adds the writes of `user` among audit log `lines`; lines that are not events of
    /// completed requests are skipped.
    pub fn count<'a>(&mut self, user: &str, lines: impl IntoIterator<Item = &'a str>) {
        for line in lines {
            let Ok(event) = serde_json::from_str::<Event>(line) else { continue };
            if event.stage != "ResponseComplete" || event.user.username != user {
                continue;
            }
            if !WRITE_VERBS.contains(&event.verb.as_str()) {
                continue;
            }
            let (resource, subresource) = event.object_ref.map(|r| (r.resource, r.subresource)).unwrap_or_default();
            let key = match subresource {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.clone(),
            };
            *self.by_resource.entry(key).or_default() += 1;
            if resource == "leases" {
                self.lease += 1;
            } else {
                self.total += 1;
            }
            if event.response_status.is_some_and(|s| s.code == 409) {
                self.conflicts += 1;
            }
        }
    }
}

/// An audit log file read from a mark onwards.
pub struct AuditLog {
    path: PathBuf,
    offset: u64,
}

impl AuditLog {
    /// Opens `path` with the mark at its current end.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut log = Self { path: path.to_owned(), offset: 0 };
        log.mark()?;
        Ok(log)
    }

    /// Moves the mark to the end of the log.
    pub fn mark(&mut self) -> anyhow::Result<()> {
        self.offset =
            std::fs::metadata(&self.path).with_context(|| format!("audit log {}", self.path.display()))?.len();
        Ok(())
    }

    /// The writes `user` made since the mark.
    pub fn since_mark(&self, user: &str) -> anyhow::Result<Writes> {
        let mut file = File::open(&self.path).with_context(|| format!("audit log {}", self.path.display()))?;
        anyhow::ensure!(
            file.metadata()?.len() >= self.offset,
            "the audit log {} was rotated during a measurement; raise --audit-log-maxsize",
            self.path.display()
        );
        file.seek(SeekFrom::Start(self.offset))?;
        let mut writes = Writes::default();
        let lines: Vec<String> = BufReader::new(file).lines().collect::<Result<_, _>>()?;
        writes.count(user, lines.iter().map(String::as_str));
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stage: &str, verb: &str, user: &str, resource: &str, sub: Option<&str>, code: u16) -> String {
        serde_json::json!({
            "kind": "Event", "level": "Metadata", "stage": stage, "verb": verb,
            "user": { "username": user },
            "objectRef": { "resource": resource, "subresource": sub, "namespace": "ns", "name": "x" },
            "responseStatus": { "code": code }
        })
        .to_string()
    }

    #[test]
    fn counts_one_users_completed_writes_with_conflicts_and_leases_apart() {
        let op = "system:serviceaccount:atrium-system:atrium-operator";
        let lines = [
            event("ResponseComplete", "patch", op, "deployments", None, 200),
            event("ResponseComplete", "patch", op, "modeldeployments", Some("status"), 200),
            event("ResponseComplete", "create", op, "secrets", None, 409),
            event("ResponseStarted", "patch", op, "deployments", None, 200),
            event("ResponseComplete", "get", op, "deployments", None, 200),
            event("ResponseComplete", "patch", "admin", "deployments", None, 200),
            event("ResponseComplete", "update", op, "leases", None, 200),
            "not json".to_owned(),
        ];
        let mut w = Writes::default();
        w.count(op, lines.iter().map(String::as_str));
        assert_eq!(w.total, 3);
        assert_eq!(w.lease, 1);
        assert_eq!(w.conflicts, 1);
        assert_eq!(w.by_resource.get("modeldeployments/status"), Some(&1));
        assert_eq!(w.by_resource.get("deployments"), Some(&1));
    }

    #[test]
    fn reads_only_what_came_after_the_mark() {
        let dir = std::env::temp_dir().join(format!("atrium-bench-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let op = "u";
        std::fs::write(&path, event("ResponseComplete", "create", op, "services", None, 201) + "\n").unwrap();
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.since_mark(op).unwrap().total, 0);
        let mut more = std::fs::read_to_string(&path).unwrap();
        more.push_str(&(event("ResponseComplete", "create", op, "configmaps", None, 201) + "\n"));
        std::fs::write(&path, more).unwrap();
        let w = log.since_mark(op).unwrap();
        assert_eq!(w.total, 1);
        assert_eq!(w.by_resource.keys().collect::<Vec<_>>(), ["configmaps"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
