//! Create or verify a KV bucket: the stream `KV_<bucket>` with subjects `$KV.<bucket>.>`.
//!
//! [`plan`] decides (pure: the live stream, the desired settings, the policy) and returns a value
//! tests can assert on; [`Bucket`] does the few NATS requests a plan needs.
//!
//! The steps, one module each: [`desired`] (what a Component asks, what the server can do),
//! [`stream_config`] (the stream a Component asks for), [`diff`]
//! (what differs from the live stream), [`plan`] (what to do about it), [`republish`] (the
//! republish annotations, checked against the bucket), [`status`] (what status shows) and
//! [`requests`] (the NATS requests).

mod desired;
mod diff;
mod plan;
mod republish;
mod requests;
mod status;
mod stream_config;

pub use desired::{
    Desired, META_COMPONENT, META_MANAGED_BY, PER_KEY_TTL, PER_KEY_TTL_ON_EXISTING, ServerFacts,
    Version, parse_version, stream_name,
};
pub use diff::{Change, ChangeKind, diff};
pub use plan::{BlockReason, Plan, plan, why_unsupported};
pub use republish::check_republish;
pub use requests::Bucket;
pub use status::{desired_config, identity, live_config, status_of};
pub use stream_config::{desired_stream, is_managed_by, owner_of};
