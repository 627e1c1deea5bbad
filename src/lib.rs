//! jetstream-kv-operator: provisions the NATS JetStream KV buckets that Dapr `state.jetstream`
//! Components name, and the streams of Dapr `pubsub.jetstream` Components, and reports their
//! state on a `KeyValueBucket` or a `JetStreamStream` of the Component's name.
//!
//! The pieces, from the pure model to the runtime:
//! - [`dapr`]: the Dapr `Component` model and Dapr's own metadata rules (pure);
//! - [`settings`]: bucket settings from `jetstreamkv.io/*` annotations (pure), with
//!   [`duration`]: the one Go-duration parser, for annotations and flags;
//! - [`secret_value`]: a value that never prints its content (pure);
//! - [`secrets`]: resolution of `secretKeyRef`s from the Component's namespace (I/O);
//! - [`credentials`]: NATS JWT and seed checks before connecting (pure);
//! - [`validate`]: the one validation pipeline of the reconciler, `check` and the webhook (pure);
//! - [`failure`]: every failure's reason and retry class (pure);
//! - [`nats`]: shared connections, and the create-or-verify bucket plan (pure) and its execution;
//! - [`pubsub`]: streams for Dapr `pubsub.jetstream` Components: metadata, subjects, plan (pure);
//! - [`crd`]: the `KeyValueBucket` resource, condition types and merging (pure);
//! - [`reconcile`]: the reconcile pipeline: read → validate → plan → execute → status → report;
//! - [`runtime`]: watches, predicate, sweeper, leader election;
//! - [`heal`] (opt-in): the workloads that load a Component rolled out when it turns Ready;
//! - [`http`] and [`metrics`]: the one serving loop, health, readiness and Prometheus metrics;
//! - [`policy`]: the admin's `NatsServerPolicy`: which servers which namespaces may use (pure);
//!   [`quota`]: what each namespace may provision under it (pure);
//!   [`fair_share`]: the reconcile workers shared between namespaces;
//! - [`serving`]: the limits of every HTTP server (connections, header and request timeouts);
//! - [`cli`]: the command line, and [`check`]: the manifest checks offline, for CI;
//! - [`apply`]: the pipeline run once on Component files, for self-hosted Dapr;
//! - [`webhook`]: the same checks as a validating admission webhook, at `kubectl apply` time.

pub mod apply;
pub mod check;
pub mod cli;
pub mod crd;
pub mod credentials;
pub mod dapr;
pub mod duration;
pub mod failure;
pub mod fair_share;
pub mod heal;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod policy;
pub mod pubsub;
pub mod quota;
pub mod reconcile;
pub mod runtime;
pub mod schema;
pub mod secret_value;
pub mod secrets;
pub mod serving;
pub mod settings;
pub mod validate;
pub mod webhook;
