//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every write to the Lease is a `replace` carrying the resourceVersion that was read, so two
//! candidates can never both succeed: the loser gets 409 Conflict. Expiry is judged from when
//! *this* process last saw the lease record change (as client-go does), not from the holder's
//! clock, so clock skew between nodes cannot cause two leaders.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::time::Instant;
use tracing::{info, warn};

use super::apply::{is_conflict, is_not_found};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub identity: String,
    /// How long a lease is valid without renewal; a new leader takes over within it.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_period: Duration,
    /// How often a candidate retries.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(name: &str, identity: &str) -> Self {
        Self {
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The last lease record seen and when it was first seen, for expiry.
    observed: Option<(LeaseSpec, Instant)>,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, cfg: LeaseConfig) -> Self {
        Self { api, cfg, observed: None }
    }

    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    /// Returns once this process holds the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: could not read or write the lease"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews the lease until a renewal fails for longer than the lease duration allows (or the
    /// lease was taken); returns when leadership is lost.
    pub async fn hold(&mut self) {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.cfg.name, "leadership lost: the lease is held by another replica");
                    return;
                }
                Err(e) => warn!(error = %e, "leader election: renewal failed, retrying"),
            }
            // Stop acting before others may consider the lease expired.
            if last_renewal.elapsed() + self.cfg.renew_period >= self.cfg.lease_duration {
                warn!(lease = %self.cfg.name, "leadership lost: could not renew in time");
                return;
            }
        }
    }

    /// Gives the lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else { return };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => info!(lease = %self.cfg.name, "released leadership"),
            Err(e) => warn!(error = %e, "could not release the lease; it will expire"),
        }
    }

    /// One round: take the lease if it is free or expired, renew it if ours. `Ok(true)` when
    /// this process holds it afterwards.
    async fn try_acquire_or_renew(&mut self) -> kube::Result<bool> {
        let now = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.cfg.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };

        let spec = lease.spec.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != spec) {
            self.observed = Some((spec.clone(), Instant::now()));
        }
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let ours = holder == self.cfg.identity;
        if !ours && !holder.is_empty() {
            let their_duration =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration_secs).max(1) as u64);
            let seen_at = self.observed.as_ref().map(|(_, at)| *at).unwrap_or_else(Instant::now);
            if seen_at.elapsed() < their_duration {
                return Ok(false);
            }
        }

        let mut next = spec.clone();
        next.holder_identity = Some(self.cfg.identity.clone());
        next.lease_duration_seconds = Some(duration_secs);
        next.renew_time = Some(now.clone());
        if !ours {
            next.acquire_time = Some(now);
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(next);
        // `lease.metadata.resourceVersion` is the one we read: a concurrent writer makes this 409.
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(written) => {
                self.observed = written.spec.map(|s| (s, Instant::now()));
                Ok(true)
            }
            Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
