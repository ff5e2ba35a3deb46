//! A run's phase, times and failure, read from its live Job and pods; and the status that
//! records them. Pure.
//!
//! - The Job `Complete` → `Succeeded`; `Failed` → `Failed`, with the failure read from the pods
//!   (the exit code of the training container, `OOMKilled`), else from the Job
//!   (`DeadlineExceeded` for `timeoutSeconds`, `BackoffLimitExceeded`).
//! - A pod that cannot pull its image or create its container, for longer than
//!   [`STUCK_GRACE`]: `Failed` with that reason — the Job would wait for ever — and the Job is
//!   stopped.
//! - A pod the scheduler cannot place: still `Starting`, `Ready=False/Unschedulable` with the
//!   scheduler's message (an autoscaler may add a node).
//! - A pod running, or done: `Running`. Otherwise `Starting`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{ContainerStateTerminated, Pod},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::build::TRAINING_CONTAINER;
use crate::{
    api::{
        TrainingRun,
        training_run::{CodeSnapshot, RunFailure, RunPhase, TrainingRunStatus},
    },
    controller::compute_cluster::admission::job_finished_at,
    runtime::conditions::{Cond, READY, merge},
};

/// How long a pod may fail to pull its image (or create its container) before the run fails.
pub const STUCK_GRACE: Duration = Duration::from_secs(15);
/// Waiting reasons that never resolve by themselves (or only by a fix elsewhere).
const STUCK_REASONS: &[&str] =
    &["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"];

/// What the live Job and pods say about a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub phase: RunPhase,
    /// Reason and message of the `Ready` condition.
    pub reason: String,
    pub message: String,
    pub start_time: Option<Timestamp>,
    pub completion_time: Option<Timestamp>,
    pub failure: Option<RunFailure>,
    /// Look again after this long (a grace period running out).
    pub recheck_in: Option<Duration>,
    /// The Job must be stopped: it would not end by itself.
    pub stop_job: bool,
}

impl Observed {
    /// A run that has not started: `Queued`, with why.
    pub fn queued(reason: &str, message: impl Into<String>) -> Self {
        Self::plain(RunPhase::Queued, reason, message)
    }

    fn plain(phase: RunPhase, reason: &str, message: impl Into<String>) -> Self {
        Self {
            phase,
            reason: reason.into(),
            message: message.into(),
            start_time: None,
            completion_time: None,
            failure: None,
            recheck_in: None,
            stop_job: false,
        }
    }

    /// A run that ended with `failure`.
    pub fn failed(failure: RunFailure, at: Option<Timestamp>) -> Self {
        let mut o = Self::plain(
            RunPhase::Failed,
            failure.reason.as_deref().unwrap_or("Failed"),
            failure.message.clone().unwrap_or_default(),
        );
        o.failure = Some(failure);
        o.completion_time = at;
        o
    }

    /// A run whose Job is gone before it finished.
    pub fn canceled(message: impl Into<String>, at: Timestamp) -> Self {
        let mut o = Self::plain(RunPhase::Canceled, "Canceled", message);
        o.completion_time = Some(at);
        o
    }
}

/// What `job` and its `pods` say, at `now`.
pub fn observe(job: &Job, pods: &[&Pod], now: Timestamp) -> Observed {
    let status = job.status.as_ref();
    let start_time = earliest_start(pods).or_else(|| status.and_then(|s| s.start_time.as_ref()).map(|t| t.0));
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == "True"))
    };
    let finished_at = job_finished_at(job).flatten();

    if condition("Complete").is_some() {
        let mut o = Observed::plain(RunPhase::Succeeded, "Succeeded", "the training finished successfully");
        o.start_time = start_time;
        o.completion_time = finished_at;
        return o;
    }
    if let Some(failed) = condition("Failed") {
        let failure = container_failure(pods).or_else(|| stuck(pods).map(|(f, _)| f)).unwrap_or_else(|| {
            let reason = failed.reason.clone().unwrap_or_else(|| "Failed".into());
            let message = match reason.as_str() {
                "DeadlineExceeded" => "the run took longer than its timeoutSeconds and was stopped".to_owned(),
                _ => failed.message.clone().unwrap_or_else(|| "the Job failed".into()),
            };
            RunFailure { reason: Some(reason), message: Some(message), exit_code: None }
        });
        let mut o = Observed::failed(failure, finished_at);
        o.start_time = start_time;
        return o;
    }

    // Still going.
    if let Some((failure, since)) = stuck(pods) {
        let stuck_for = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
        if stuck_for >= STUCK_GRACE {
            let mut o = Observed::failed(failure, Some(now));
            o.start_time = start_time;
            o.stop_job = true;
            return o;
        }
        let mut o = Observed::plain(
            RunPhase::Starting,
            failure.reason.as_deref().unwrap_or("Starting"),
            failure.message.clone().unwrap_or_default(),
        );
        o.recheck_in = Some(STUCK_GRACE - stuck_for);
        return o;
    }
    let total = job.spec.as_ref().and_then(|s| s.parallelism).unwrap_or(1).max(1);
    let running = pods.iter().filter(|p| phase(p) == "Running").count();
    let done = pods.iter().filter(|p| matches!(phase(p), "Succeeded" | "Failed")).count();
    if running > 0 || done > 0 {
        let message = match done {
            0 => format!("{running} of {total} instances running"),
            _ => format!("{running} of {total} instances running, {done} done"),
        };
        let mut o = Observed::plain(RunPhase::Running, "Running", message);
        o.start_time = start_time;
        return o;
    }
    if let Some(message) = unschedulable(pods) {
        return Observed::plain(
            RunPhase::Starting,
            "Unschedulable",
            format!("the run's pods cannot be scheduled: {message}"),
        );
    }
    Observed::plain(RunPhase::Starting, "Starting", "waiting for the run's pods to start")
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// When the first training container started.
fn earliest_start(pods: &[&Pod]) -> Option<Timestamp> {
    pods.iter()
        .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .filter_map(|c| {
            let state = c.state.as_ref()?;
            state
                .running
                .as_ref()
                .and_then(|r| r.started_at.as_ref())
                .or_else(|| state.terminated.as_ref().and_then(|t| t.started_at.as_ref()))
                .map(|t| t.0)
        })
        .min()
}

/// The failure of the training container that ended last with a non-zero exit code.
fn container_failure(pods: &[&Pod]) -> Option<RunFailure> {
    let terminated: Vec<&ContainerStateTerminated> = pods
        .iter()
        .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .filter(|c| c.name == TRAINING_CONTAINER)
        .filter_map(|c| {
            let current = c.state.as_ref().and_then(|s| s.terminated.as_ref());
            current.or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))
        })
        .filter(|t| t.exit_code != 0)
        .collect();
    let last = terminated.into_iter().max_by_key(|t| t.finished_at.as_ref().map(|f| f.0))?;
    let reason = match last.reason.as_deref() {
        Some("OOMKilled") => "OOMKilled",
        _ if last.exit_code == 137 => "OOMKilled",
        _ => "Error",
    };
    let mut message = if reason == "OOMKilled" {
        format!("the training container ran out of memory and was killed (exit code {})", last.exit_code)
    } else {
        format!("the training container exited with code {}", last.exit_code)
    };
    if let Some(m) = last.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        message = format!("{message}: {m}");
    }
    Some(RunFailure { reason: Some(reason.into()), message: Some(message), exit_code: Some(last.exit_code) })
}

/// A pod stuck before its container could start, as a failure, and since when.
fn stuck(pods: &[&Pod]) -> Option<(RunFailure, Timestamp)> {
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let waiting = status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
            .find(|w| w.reason.as_deref().is_some_and(|r| STUCK_REASONS.contains(&r)))?;
        let since = status.start_time.as_ref().or(pod.metadata.creation_timestamp.as_ref()).map(|t| t.0)?;
        let reason = waiting.reason.clone().unwrap_or_default();
        let what = if reason.contains("Image") { "cannot pull its image" } else { "cannot start its container" };
        let detail = waiting.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        let message = format!("the training container {what} ({reason}){detail}");
        Some((RunFailure { reason: Some(reason), message: Some(message), exit_code: None }, since))
    })
}

/// The scheduler's message for a pod it cannot place.
fn unschedulable(pods: &[&Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")?;
        (c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
            .then(|| c.message.clone().unwrap_or_default())
    })
}

/// What a run's status records beside its phase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub snapshot: Option<CodeSnapshot>,
    pub job_name: Option<String>,
    pub outputs_path: Option<String>,
    pub registered_model: Option<String>,
}

/// The status of `run` given what was observed. Times, once recorded, stay: a run's status is
/// its record.
pub fn desired_status(run: &TrainingRun, observed: &Observed, record: Record, now: &Time) -> TrainingRunStatus {
    let current = run.status.clone().unwrap_or_default();
    let ready = Cond::new(READY, observed.phase == RunPhase::Succeeded, &observed.reason, observed.message.clone());
    let generation = run.metadata.generation;
    TrainingRunStatus {
        observed_generation: generation,
        conditions: merge(&current.conditions, &[ready], generation, now),
        phase: Some(observed.phase),
        start_time: current.start_time.or(observed.start_time.map(Time)),
        completion_time: current.completion_time.or(observed.completion_time.map(Time)),
        snapshot: record.snapshot,
        outputs_path: record.outputs_path,
        job_name: record.job_name,
        failure: observed.failure.clone(),
        registered_model: record.registered_model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(
            json!({"metadata": {"name": "j"}, "spec": {"parallelism": 2, "template": {}}, "status": status}),
        )
        .unwrap()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"}, "status": status}),
        )
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_complete_job_is_a_success_with_its_times() {
        let j = job(json!({"startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:01:00Z",
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2024-01-01T00:01:00Z"}]}));
        let p = pod(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "training", "image": "x", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "startedAt": "2024-01-01T00:00:05Z", "finishedAt": "2024-01-01T00:00:59Z"}}}]}),
        );
        let o = observe(&j, &[&p], at("2024-01-01T00:02:00Z"));
        assert_eq!(o.phase, RunPhase::Succeeded);
        assert_eq!(o.start_time, Some(at("2024-01-01T00:00:05Z")), "when the container started");
        assert_eq!(o.completion_time, Some(at("2024-01-01T00:01:00Z")));
    }

    #[test]
    fn a_failed_job_reports_the_exit_code_and_oom() {
        let j = job(json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "lastTransitionTime": "2024-01-01T00:01:00Z"}]}));
        let failed = |code: i32, reason: &str| {
            pod(json!({"phase": "Failed", "containerStatuses": [{"name": "training", "image": "x", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason, "finishedAt": "2024-01-01T00:00:59Z"}}}]}))
        };
        let p = failed(3, "Error");
        let o = observe(&j, &[&p], at("2024-01-01T00:02:00Z"));
        assert_eq!(o.phase, RunPhase::Failed);
        let f = o.failure.unwrap();
        assert_eq!((f.reason.as_deref(), f.exit_code), (Some("Error"), Some(3)));
        assert!(f.message.unwrap().contains("exited with code 3"));
        assert_eq!(o.completion_time, Some(at("2024-01-01T00:01:00Z")));

        let p = failed(137, "OOMKilled");
        let f = observe(&j, &[&p], at("2024-01-01T00:02:00Z")).failure.unwrap();
        assert_eq!((f.reason.as_deref(), f.exit_code), (Some("OOMKilled"), Some(137)));

        // No pod left to tell: the Job's reason.
        let f = observe(&j, &[], at("2024-01-01T00:02:00Z")).failure.unwrap();
        assert_eq!(f.reason.as_deref(), Some("BackoffLimitExceeded"));
    }

    #[test]
    fn a_timeout_is_deadline_exceeded() {
        let j = job(json!({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"}]}));
        let f = observe(&j, &[], Timestamp::UNIX_EPOCH).failure.unwrap();
        assert_eq!(f.reason.as_deref(), Some("DeadlineExceeded"));
        assert!(f.message.unwrap().contains("timeoutSeconds"));
    }

    #[test]
    fn an_image_pull_error_fails_the_run_after_the_grace_period() {
        let j = job(json!({"active": 1}));
        let p = pod(
            json!({"phase": "Pending", "startTime": "2024-01-01T00:00:00Z", "containerStatuses": [{"name": "training",
            "image": "registry.invalid/x:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImagePull", "message": "no such host"}}}]}),
        );
        let early = observe(&j, &[&p], at("2024-01-01T00:00:05Z"));
        assert_eq!((early.phase, early.reason.as_str()), (RunPhase::Starting, "ErrImagePull"));
        assert_eq!(early.recheck_in, Some(Duration::from_secs(10)));
        assert!(!early.stop_job);

        let late = observe(&j, &[&p], at("2024-01-01T00:00:20Z"));
        assert_eq!(late.phase, RunPhase::Failed);
        assert!(late.stop_job);
        let f = late.failure.unwrap();
        assert_eq!(f.reason.as_deref(), Some("ErrImagePull"));
        assert!(f.message.unwrap().contains("no such host"));
    }

    #[test]
    fn pending_running_and_unschedulable() {
        let j = job(json!({"active": 2}));
        let pending = pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available"}]}));
        let o = observe(&j, &[&pending], Timestamp::UNIX_EPOCH);
        assert_eq!((o.phase, o.reason.as_str()), (RunPhase::Starting, "Unschedulable"));
        assert!(o.message.contains("0/3 nodes"));

        let running = pod(json!({"phase": "Running", "containerStatuses": [{"name": "training", "image": "x",
            "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2024-01-01T00:00:03Z"}}}]}));
        let o = observe(&j, &[&running, &pending], Timestamp::UNIX_EPOCH);
        assert_eq!((o.phase, o.message.as_str()), (RunPhase::Running, "1 of 2 instances running"));
        assert_eq!(o.start_time, Some(at("2024-01-01T00:00:03Z")));

        assert_eq!(observe(&j, &[], Timestamp::UNIX_EPOCH).phase, RunPhase::Starting);
    }

    #[test]
    fn recorded_times_stay_and_an_unchanged_observation_gives_an_equal_status() {
        let mut run: TrainingRun = serde_json::from_value(json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": "r", "namespace": "n", "generation": 1},
            "spec": {"computeCluster": "cpu", "image": "x"}
        }))
        .unwrap();
        let mut o = Observed::queued("Queued", "position 1");
        let t1 = Time(at("2024-01-01T00:00:00Z"));
        let s = desired_status(&run, &o, Record::default(), &t1);
        assert_eq!(s.phase, Some(RunPhase::Queued));
        assert_eq!(s.conditions[0].status, "False");
        run.status = Some(s.clone());
        assert_eq!(desired_status(&run, &o, Record::default(), &Time(at("2024-01-01T00:05:00Z"))), s);

        o = Observed::plain(RunPhase::Running, "Running", "1 of 1 instances running");
        o.start_time = Some(at("2024-01-01T00:01:00Z"));
        run.status = Some(desired_status(&run, &o, Record::default(), &t1));
        o.start_time = Some(at("2024-01-01T00:03:00Z"));
        let s = desired_status(&run, &o, Record::default(), &t1);
        assert_eq!(s.start_time, Some(Time(at("2024-01-01T00:01:00Z"))), "the first start is the record");
    }
}
