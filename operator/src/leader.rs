//! Leader election through a coordination.k8s.io Lease: only the holder reconciles, so two
//! operator replicas never write the same children. Updates are compare-and-swap on the Lease's
//! resourceVersion; a holder that cannot renew within the lease duration stops (the process
//! exits and its Deployment restarts it as a candidate), as controller-runtime does.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_PERIOD: Duration = Duration::from_secs(5);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Lease API: {0}")]
    Kube(#[from] kube::Error),
    #[error("lost the leader Lease: not renewed within {0:?}")]
    Lost(Duration),
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renew) = spec.renew_time.as_ref() else {
        return true;
    };
    let dur = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renew.0 + SignedDuration::from_secs(dur) < now
}

impl Elector {
    pub fn new(api: Api<Lease>, name: String, identity: String) -> Self {
        Self {
            api,
            name,
            identity,
        }
    }

    fn spec(&self, now: Timestamp, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: acquire.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to take or keep the Lease. Ok(true) when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let mine = spec.holder_identity.as_deref() == Some(&self.identity);
                if !mine && !expired(&spec, now) && spec.holder_identity.is_some() {
                    return Ok(false);
                }
                let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
                let acquire = if mine {
                    spec.acquire_time.clone()
                } else {
                    None
                };
                lease.spec = Some(self.spec(now, acquire, transitions));
                // replace carries the resourceVersion we read: a concurrent writer makes it 409.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Wait until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Keep renewing; returns an error once the Lease could not be renewed in time or another
    /// replica took it.
    pub async fn keep_renewing(&self) -> Error {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_PERIOD).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return Error::Lost(LEASE_DURATION),
                Err(e) => tracing::warn!(error = %e, "renewing the leader Lease failed"),
            }
            if last_ok.elapsed() > LEASE_DURATION {
                return Error::Lost(LEASE_DURATION);
            }
        }
    }

    /// Give the Lease up on a clean shutdown so a standby takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let mine = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str());
            if mine {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.holder_identity = None;
                    spec.renew_time = None;
                }
                let _ = self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_renew_time_and_duration() {
        let now = Timestamp::from_second(1_000).unwrap();
        let spec = |renew: Option<i64>| LeaseSpec {
            renew_time: renew.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(expired(&spec(None), now));
        assert!(expired(&spec(Some(980)), now));
        assert!(!expired(&spec(Some(990)), now));
    }
}
