//! Leader election with a `coordination.k8s.io` Lease, so that two replicas are safe: only the
//! holder of the Lease reconciles and writes.
//!
//! The election itself is `kube_lease_manager`'s. It tells a holder that it lost the Lease only
//! when it reads another holder, which it cannot while the API server is out of reach: a leader
//! cut off for longer than the Lease would go on writing to NATS while a standby, which sees the
//! Lease expire, writes too. So a leader also reads the Lease itself and counts it lost when it
//! has not seen it renewed shortly before it expires ([`Election::lost`]).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where the Lease lives and how long a holder keeps it without renewing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

/// A running election. Dropping the receiver (via [`Election::release`]) gives the Lease up.
pub struct Election {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
    leases: Api<Lease>,
    name: String,
    identity: String,
    /// How long a holder keeps the Lease, and how long before it expires the holder renews it.
    duration: Duration,
    grace: Duration,
}

impl Election {
    /// Joins the election (creating the Lease if needed).
    pub async fn join(client: Client, config: &LeaseConfig) -> Result<Self, LeaseManagerError> {
        let duration = config.duration.as_secs().max(2);
        // Renew a third of the way in, so that a renewal has two thirds of the duration (less a
        // step) to get through a loaded API server before the hold counts as lost: 10 s of 15,
        // as client-go's renew deadline. With a third (renewing two thirds of the way in) a 6 s
        // Lease left 1.5 s, and a leader on a loaded machine exited while nothing was wrong.
        let grace = (duration * 2 / 3).clamp(1, duration - 1);
        let manager = LeaseManagerBuilder::new(client.clone(), &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_field_manager(format!("{}-lease", crate::crd::MANAGER))
            .with_duration(duration)
            .with_grace(grace)
            .build()
            .await?;
        let (leading, task) = manager.watch().await;
        Ok(Self {
            leading,
            task,
            leases: Api::namespaced(client, &config.namespace),
            name: config.name.clone(),
            identity: config.identity.clone(),
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(grace),
        })
    }

    /// Resolves once this instance holds the Lease.
    pub async fn acquired(&mut self) {
        let _ = self.leading.wait_for(|leading| *leading).await;
    }

    /// A future, for a holder, that resolves when it no longer holds the Lease: the election says
    /// so (or stopped), or the holder's own reads of the Lease show another holder, or fail to
    /// show it renewed before it expires (the API server out of reach).
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut leading = self.leading.clone();
        let told = async move {
            let _ = leading.wait_for(|leading| !*leading).await;
        };
        let expired = held_until_unconfirmed(
            self.leases.clone(),
            self.name.clone(),
            self.identity.clone(),
            self.duration,
            self.grace,
        );
        async move {
            tokio::select! {
                _ = told => {}
                why = expired => tracing::warn!("{why}"),
            }
        }
    }

    /// Gives the Lease up (so a standby takes over at once) and waits, at most `timeout`.
    pub async fn release(self, timeout: Duration) {
        drop(self.leading);
        match tokio::time::timeout(timeout, self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the leader Lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the leader election task failed"),
            Err(_) => tracing::warn!("timed out releasing the leader Lease"),
        }
    }
}

/// What a read of the Lease says about `identity`'s hold at `now`.
#[derive(Debug, PartialEq, Eq)]
enum Hold {
    /// Held, for this long yet unless renewed.
    For(Duration),
    /// Held by another, or expired: a standby may be writing.
    Lost,
}

/// Decides from a read of the Lease at `now` how long `identity` still holds it: until its
/// renewTime plus its leaseDurationSeconds, the instant a standby may take it.
fn hold(lease: &Lease, identity: &str, now: Timestamp) -> Hold {
    let Some(spec) = &lease.spec else {
        return Hold::Lost;
    };
    let (Some(holder), Some(renewed), Some(seconds)) = (
        spec.holder_identity.as_deref(),
        spec.renew_time.as_ref(),
        spec.lease_duration_seconds,
    ) else {
        return Hold::Lost;
    };
    let expires = renewed
        .0
        .checked_add(jiff::SignedDuration::from_secs(i64::from(seconds)));
    match expires.map(|expires| now.duration_until(expires)) {
        Ok(left) if holder == identity && left.is_positive() => Hold::For(left.unsigned_abs()),
        _ => Hold::Lost,
    }
}

/// Reads the Lease after each expected renewal (a step, a quarter of the grace, after it, then
/// every step until it is seen), and returns why the hold is lost: another holder, or the Lease
/// a step from its expiry without a read showing it renewed.
async fn held_until_unconfirmed(
    leases: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    grace: Duration,
) -> String {
    let step = (grace / 4).max(Duration::from_millis(250));
    // Just acquired (renewed less than the grace ago): held until a read says more.
    let mut deadline = Instant::now() + duration.saturating_sub(grace);
    loop {
        let (read_at, now) = (Instant::now(), Timestamp::now());
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return "lost the leader Lease: could not read it renewed before it expired".into();
            }
            read = leases.get_opt(&name) => match read {
                Ok(Some(lease)) => match hold(&lease, &identity, now) {
                    // A step early: the process must be gone before a standby can take over.
                    Hold::For(left) => deadline = read_at + left.saturating_sub(step),
                    Hold::Lost => return "lost the leader Lease: another holder, or expired".into(),
                },
                Ok(None) => return "lost the leader Lease: it was deleted".into(),
                Err(e) => tracing::debug!(error = %e, "could not read the leader Lease"),
            },
        }
        // The holder renews `grace` before the expiry (a step after the deadline): read a step
        // after that.
        let renewal = (deadline + step).checked_sub(grace).unwrap_or(read_at);
        let next = (renewal + step).max(Instant::now() + step);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return "lost the leader Lease: could not read it renewed before it expired".into();
            }
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed: Option<Timestamp>, seconds: Option<i32>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                renew_time: renewed.map(MicroTime),
                lease_duration_seconds: seconds,
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_lease_is_held_until_its_renewal_plus_its_duration() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let renewed = Timestamp::from_second(999_998).unwrap();
        assert_eq!(
            hold(&lease(Some("me"), Some(renewed), Some(6)), "me", now),
            Hold::For(Duration::from_secs(4))
        );
    }

    #[test]
    fn another_holder_an_expired_or_a_half_written_lease_is_lost() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let fresh = Some(now);
        let old = Some(Timestamp::from_second(999_990).unwrap());
        for (lease, why) in [
            (lease(Some("other"), fresh, Some(6)), "another holder"),
            (lease(Some("me"), old, Some(6)), "expired"),
            (lease(Some("me"), Some(now), Some(0)), "expires now"),
            (lease(None, fresh, Some(6)), "released"),
            (lease(Some("me"), None, Some(6)), "no renewTime"),
            (lease(Some("me"), fresh, None), "no duration"),
            (Lease::default(), "no spec"),
        ] {
            assert_eq!(hold(&lease, "me", now), Hold::Lost, "{why}");
        }
    }
}
