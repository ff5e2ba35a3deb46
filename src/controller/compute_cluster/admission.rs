//! Admission and accounting of a compute cluster's instances. Pure, and decided afresh from
//! the live state on every reconcile: the TrainingRun controller asks it whether a run may start,
//! the ComputeCluster controller how many instances are busy and how many to keep on standby.
//! Both get the same answer from the same state.
//!
//! - *Busy* instances belong to runs whose Job is live and not finished.
//! - *Waiting* runs (not finished, no Job yet) form the queue, oldest first (creation time, then
//!   name). Walking it in order, a run is admitted while the busy instances plus those admitted
//!   before it leave room for its `instanceCount` under `maxInstances`; the first that does not
//!   fit stops the walk, so no later run overtakes it (first come, first served). A run larger
//!   than `maxInstances` can never start and does not hold up the others.
//! - *Standby* = `max(minInstances − busy, 0)` plus the instances of runs that finished less
//!   than `idleTimeBeforeScaleDown` ago, never more than `maxInstances − busy`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;

use crate::api::{ComputeCluster, ComputeClusterSpec, TrainingRun};

/// One run of a cluster, as admission and accounting see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSlot {
    pub name: String,
    pub created: Option<Timestamp>,
    pub instances: i32,
    pub state: SlotState,
}

/// Where a run is, for admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Not finished and without a Job: in the queue.
    Waiting,
    /// Its Job is live and not finished.
    Busy,
    /// Finished; `freed_at` is when its instances were freed, `None` when it never held any.
    Finished { freed_at: Option<Timestamp> },
}

/// Where a waiting run stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It may start now.
    Admitted,
    /// It waits; `position` is 1-based among the runs that wait.
    Queued { position: usize, ahead_instances: i32 },
    /// It needs more instances than `maxInstances`: it can never start on this cluster.
    TooLarge,
}

/// The cluster's state and decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Instances of runs whose Job is live and not finished.
    pub busy: i32,
    /// The waiting runs, in queue order, with their admission.
    pub queue: Vec<(String, Admission)>,
    /// Instances freed by runs that finished within the idle time.
    pub recently_freed: i32,
    /// The standby instances to keep.
    pub standby: i32,
    /// When `recently_freed` next drops (and the cluster should be reconsidered).
    pub next_scale_down: Option<Duration>,
}

impl Plan {
    /// The admission of the waiting run `name`, `None` when it does not wait.
    pub fn admission(&self, name: &str) -> Option<&Admission> {
        self.queue.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    /// How many runs wait in `Queued`.
    pub fn queued(&self) -> i32 {
        self.queue.iter().filter(|(_, a)| !matches!(a, Admission::Admitted)).count() as i32
    }
}

/// Decides admission and standby for a cluster with `spec` and these runs, at `now`.
pub fn plan(spec: &ComputeClusterSpec, runs: &[RunSlot], now: Timestamp) -> Plan {
    let busy: i32 = runs.iter().filter(|r| r.state == SlotState::Busy).map(|r| r.instances).sum();

    let mut waiting: Vec<&RunSlot> = runs.iter().filter(|r| r.state == SlotState::Waiting).collect();
    waiting.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    let mut room = spec.max_instances - busy;
    let mut blocked = false;
    let mut position = 0;
    let mut ahead_instances = 0;
    let mut queue = Vec::with_capacity(waiting.len());
    for run in waiting {
        let admission = if run.instances > spec.max_instances {
            Admission::TooLarge
        } else if !blocked && run.instances <= room {
            room -= run.instances;
            Admission::Admitted
        } else {
            blocked = true;
            position += 1;
            let a = Admission::Queued { position, ahead_instances };
            ahead_instances += run.instances;
            a
        };
        queue.push((run.name.clone(), admission));
    }

    let idle = Duration::from_secs(spec.idle_time_before_scale_down.max(0) as u64);
    let mut recently_freed = 0;
    let mut next_scale_down: Option<Duration> = None;
    for run in runs {
        let SlotState::Finished { freed_at: Some(at) } = run.state else { continue };
        let since = now.duration_since(at);
        let since = Duration::try_from(since).unwrap_or(Duration::ZERO);
        if since < idle {
            recently_freed += run.instances;
            let left = idle - since;
            next_scale_down = Some(next_scale_down.map_or(left, |n| n.min(left)));
        }
    }
    let floor = (spec.min_instances - busy).max(0);
    let ceiling = (spec.max_instances - busy).max(0);
    let standby = (floor + recently_freed).min(ceiling);
    Plan { busy, queue, recently_freed, standby, next_scale_down }
}

/// The annotation naming the run a Job (and its pods) belongs to.
pub const RUN_ANNOTATION: &str = "atrium.dev/training-run";
/// The annotation naming the compute cluster a Job runs on.
pub const CLUSTER_ANNOTATION: &str = "atrium.dev/compute-cluster";

/// Whether a Job has finished (its `Complete` or `Failed` condition is true).
pub fn job_finished_at(job: &Job) -> Option<Option<Timestamp>> {
    let status = job.status.as_ref()?;
    let finished = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = status.completion_time.as_ref().map(|t| t.0).or(finished.last_transition_time.as_ref().map(|t| t.0));
    Some(at)
}

/// The slot of `run`, whose Job (from the cache) is `job`.
pub fn slot(run: &TrainingRun, job: Option<&Job>) -> RunSlot {
    let status = run.status.as_ref();
    let terminal = status.and_then(|s| s.phase).is_some_and(|p| p.is_terminal());
    let state = if terminal {
        // A run that never had a Job never held an instance.
        let held = status.and_then(|s| s.job_name.as_ref()).is_some();
        let at = status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0);
        SlotState::Finished { freed_at: at.filter(|_| held) }
    } else {
        match job {
            Some(job) if job.metadata.deletion_timestamp.is_some() => SlotState::Finished { freed_at: None },
            Some(job) => match job_finished_at(job) {
                Some(at) => SlotState::Finished { freed_at: at },
                None => SlotState::Busy,
            },
            None => SlotState::Waiting,
        }
    };
    RunSlot {
        name: run.name_any(),
        created: run.metadata.creation_timestamp.as_ref().map(|t| t.0),
        instances: run.spec.instance_count.max(1),
        state,
    }
}

/// The runs of `cluster` among `runs` (same namespace, naming it), as slots, with their Jobs
/// looked up by `job_of`.
pub fn slots<'a>(
    cluster: &ComputeCluster,
    runs: impl IntoIterator<Item = &'a TrainingRun>,
    job_of: impl Fn(&TrainingRun) -> Option<&'a Job>,
) -> Vec<RunSlot> {
    let ns = cluster.namespace();
    let name = cluster.name_any();
    runs.into_iter()
        .filter(|r| r.namespace() == ns && r.spec.compute_cluster == name)
        .map(|r| slot(r, job_of(r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn run(name: &str, created: i64, instances: i32, state: SlotState) -> RunSlot {
        RunSlot { name: name.into(), created: Some(ts(created)), instances, state }
    }

    fn spec(min: i32, max: i32, idle: i64) -> ComputeClusterSpec {
        ComputeClusterSpec {
            min_instances: min,
            max_instances: max,
            idle_time_before_scale_down: idle,
            ..Default::default()
        }
    }

    #[test]
    fn three_runs_on_two_instances_two_start_one_waits() {
        let runs = [
            run("c", 3, 1, SlotState::Waiting),
            run("a", 1, 1, SlotState::Waiting),
            run("b", 2, 1, SlotState::Waiting),
        ];
        let p = plan(&spec(0, 2, 120), &runs, ts(10));
        assert_eq!(p.admission("a"), Some(&Admission::Admitted));
        assert_eq!(p.admission("b"), Some(&Admission::Admitted));
        assert_eq!(p.admission("c"), Some(&Admission::Queued { position: 1, ahead_instances: 0 }));
        assert_eq!(p.queued(), 1);

        // a and b running: c still waits; a finishes: c goes.
        let runs =
            [run("a", 1, 1, SlotState::Busy), run("b", 2, 1, SlotState::Busy), run("c", 3, 1, SlotState::Waiting)];
        let p = plan(&spec(0, 2, 120), &runs, ts(10));
        assert_eq!((p.busy, p.queued()), (2, 1));
        let runs = [
            run("a", 1, 1, SlotState::Finished { freed_at: Some(ts(9)) }),
            run("b", 2, 1, SlotState::Busy),
            run("c", 3, 1, SlotState::Waiting),
        ];
        let p = plan(&spec(0, 2, 120), &runs, ts(10));
        assert_eq!(p.admission("c"), Some(&Admission::Admitted));
    }

    #[test]
    fn ties_on_creation_time_go_by_name() {
        let runs = [run("b", 1, 1, SlotState::Waiting), run("a", 1, 1, SlotState::Waiting)];
        let p = plan(&spec(0, 1, 0), &runs, ts(10));
        assert_eq!(p.admission("a"), Some(&Admission::Admitted));
        assert_eq!(p.admission("b"), Some(&Admission::Queued { position: 1, ahead_instances: 0 }));
    }

    #[test]
    fn a_large_run_at_the_head_is_not_overtaken() {
        let runs = [
            run("big", 1, 3, SlotState::Waiting),
            run("small", 2, 1, SlotState::Waiting),
            run("busy", 0, 2, SlotState::Busy),
        ];
        let p = plan(&spec(0, 4, 0), &runs, ts(10));
        assert_eq!(p.admission("big"), Some(&Admission::Queued { position: 1, ahead_instances: 0 }));
        assert_eq!(p.admission("small"), Some(&Admission::Queued { position: 2, ahead_instances: 3 }));
    }

    #[test]
    fn a_run_larger_than_the_cluster_holds_up_nobody() {
        let runs = [run("huge", 1, 5, SlotState::Waiting), run("small", 2, 1, SlotState::Waiting)];
        let p = plan(&spec(0, 4, 0), &runs, ts(10));
        assert_eq!(p.admission("huge"), Some(&Admission::TooLarge));
        assert_eq!(p.admission("small"), Some(&Admission::Admitted));
        assert_eq!(p.queued(), 1, "the too-large run is reported as queued");
    }

    #[test]
    fn standby_is_min_less_busy_plus_recently_freed_within_max() {
        let s = spec(2, 4, 60);
        assert_eq!(plan(&s, &[], ts(0)).standby, 2);
        let busy_one = [run("a", 0, 1, SlotState::Busy)];
        assert_eq!(plan(&s, &busy_one, ts(0)).standby, 1);

        // Three runs finished 10 s ago, one busy: min − busy = 1, plus 3 freed, capped at 4 − 1.
        let runs = [
            run("a", 0, 1, SlotState::Finished { freed_at: Some(ts(100)) }),
            run("b", 0, 1, SlotState::Finished { freed_at: Some(ts(100)) }),
            run("c", 0, 1, SlotState::Finished { freed_at: Some(ts(105)) }),
            run("d", 0, 1, SlotState::Busy),
        ];
        let p = plan(&s, &runs, ts(110));
        assert_eq!((p.recently_freed, p.standby), (3, 3));
        assert_eq!(p.next_scale_down, Some(Duration::from_secs(50)));

        // After the idle time: back to min − busy.
        let p = plan(&s, &runs, ts(170));
        assert_eq!((p.recently_freed, p.standby, p.next_scale_down), (0, 1, None));
    }

    #[test]
    fn runs_that_never_held_an_instance_free_nothing() {
        let runs = [run("a", 0, 2, SlotState::Finished { freed_at: None })];
        let p = plan(&spec(0, 4, 60), &runs, ts(10));
        assert_eq!(p.standby, 0);
    }
}
