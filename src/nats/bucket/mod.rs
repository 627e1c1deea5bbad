//! Create or verify a KV bucket: the stream `KV_<bucket>` with subjects `$KV.<bucket>.>`.
//!
//! [`plan`] decides (pure: the live stream, the desired settings, the policy) and returns a value
//! tests can assert on; [`crate::nats::stream::StreamClient`] does the few NATS requests a plan
//! needs, on the stream `KV_<bucket>`.
//!
//! The steps, one module each: [`desired`] (what a Component asks, what the server can do),
//! [`stream_config`] (the stream a Component asks for), [`diff`]
//! (what differs from the live stream), [`plan`] (what to do about it), [`republish`] (the
//! republish annotations, checked against the bucket) and [`status`] (what status shows).

mod desired;
mod diff;
mod plan;
mod republish;
mod status;
mod stream_config;

pub use desired::{
    Desired, PER_KEY_TTL, PER_KEY_TTL_ON_EXISTING, ServerFacts, Version, parse_version, stream_name,
};
pub use diff::diff;
pub use plan::{BlockReason, Plan, plan, why_unsupported};
pub use republish::check_republish;
pub use status::{desired_config, live_config, status_of};
pub use stream_config::desired_stream;
