//! jetstream-kv-operator: provisions the NATS JetStream KV buckets that Dapr `state.jetstream`
//! Components name, and reports their state on a `KeyValueBucket` of the same name.
//!
//! The reconcile pipeline, one module per step:
//! - [`dapr`]: the Dapr `Component` model and Dapr's own metadata rules (pure);
//! - [`settings`]: bucket settings from `jetstreamkv.io/*` annotations (pure);
//! - [`secrets`]: resolution of `secretKeyRef`s from the Component's namespace (I/O);
//! - [`credentials`]: NATS JWT and seed checks before connecting (pure);
//! - [`nats`]: shared connections, and the create-or-verify bucket plan (pure) and its execution;
//! - [`crd`]: the `KeyValueBucket` resource, conditions and status (pure);
//! - [`policy`]: the admin's `NatsServerPolicy`: which servers which namespaces may use (pure);
//! - [`controller`]: the reconciler that runs the steps above, [`fair_share`] between namespaces;
//! - [`leader`]: leader election with a Lease, so that only one replica writes;
//! - [`http`] and [`metrics`]: health, readiness and Prometheus metrics; [`serving`]: the limits
//!   of every HTTP server (connections, header and request timeouts);
//! - [`cli`]: the command line, and [`check`]: the manifest checks offline, for CI;
//! - [`webhook`]: the same checks as a validating admission webhook, at `kubectl apply` time.

pub mod check;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod dapr;
pub mod fair_share;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod nats;
pub mod policy;
pub mod secrets;
pub mod serving;
pub mod settings;
pub mod webhook;
