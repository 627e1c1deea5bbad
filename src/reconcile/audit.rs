//! Audit mode: the operator runs the whole pipeline but carries out no plan. It never sends a
//! request that changes a stream (no create, update or delete) and never writes to a Component
//! (no annotations, no finalizer added or removed); each KeyValueBucket and JetStreamStream
//! shows in `status.plan` what enforce mode would do, and Ready says only what exists. The
//! guards are where the changes are made: the execute steps ([`super::execute`],
//! [`super::stream::execute`]), the deletions ([`super::delete`]) and the one Component write
//! ([`super::report::apply_component`]).

use crate::crd::ConditionType;
use crate::failure::{Problem, Retry};
use crate::nats::stream::planned::Planned;

use super::status::Reason;

/// Whether the operator carries out its plans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Create, update and delete as planned (the default).
    #[default]
    Enforce,
    /// Plan only: change nothing in NATS and no Component; show the plans in status.
    Audit,
}

impl Mode {
    /// Whether plans are only shown.
    pub fn is_audit(self) -> bool {
        self == Self::Audit
    }
}

/// The problem a plan not carried out in audit mode reports on `condition`: Stalled (enforce
/// mode must be switched on for it to change), looked at again at the drift check.
pub fn not_carried_out(condition: ConditionType, planned: &Planned) -> Problem {
    Problem::new(
        condition,
        Reason::AuditMode.as_str(),
        format!(
            "audit mode: enforce mode would {} ({}); nothing was changed: the plan is in status.plan, run the operator with --mode enforce to apply it",
            planned.summary(),
            planned.message
        ),
        Retry::Resync,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::stream::planned::PlannedAction;

    #[test]
    fn a_plan_not_carried_out_says_what_and_how_to_apply_it() {
        let planned = Planned::new("KV_a", PlannedAction::Create, "the bucket does not exist");
        let p = not_carried_out(ConditionType::BucketAvailable, &planned);
        assert_eq!(p.reason, "AuditMode");
        assert!(p.stalled);
        assert!(p.message.contains("would create KV_a"), "{}", p.message);
        assert!(p.message.contains("--mode enforce"), "{}", p.message);
    }
}
