//! Leader election with a `coordination.k8s.io` Lease, so that two replicas are safe: only the
//! holder of the Lease reconciles and writes.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
}

impl Election {
    /// Joins the election (creating the Lease if needed).
    pub async fn join(client: Client, config: &LeaseConfig) -> Result<Self, LeaseManagerError> {
        let duration = config.duration.as_secs().max(2);
        // Renew well before expiry: a third of the duration, at least a second.
        let grace = (duration / 3).max(1);
        let manager = LeaseManagerBuilder::new(client, &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_field_manager(format!("{}-lease", crate::crd::MANAGER))
            .with_duration(duration)
            .with_grace(grace)
            .build()
            .await?;
        let (leading, task) = manager.watch().await;
        Ok(Self { leading, task })
    }

    /// Resolves once this instance holds the Lease.
    pub async fn acquired(&mut self) {
        let _ = self.leading.wait_for(|leading| *leading).await;
    }

    /// A future that resolves when this instance no longer holds the Lease (or the election
    /// stopped).
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut leading = self.leading.clone();
        async move {
            let _ = leading.wait_for(|leading| !*leading).await;
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
