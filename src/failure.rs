//! What every failure says about itself: its CamelCase reason (a condition's, an Event's, a
//! metric label's) and when to look again. One trait, implemented by each layer's error type, so
//! the reconciler maps every failure to a status and a retry the same way.

use crate::crd::ConditionType;

/// When to look at an object again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// All good, or blocked on server state a person must change: the periodic drift check.
    Resync,
    /// A transient failure: exponential back-off.
    Backoff,
    /// Needs a change of the Component or a Secret, which the watches deliver.
    AwaitChange,
}

/// A failure with a reason and a retry class.
pub trait Failure {
    /// The CamelCase reason for conditions, Events and metrics.
    fn reason(&self) -> &'static str;

    /// When to try again.
    fn retry(&self) -> Retry;

    /// kstatus: `Stalled` (someone must act) rather than `Reconciling` (retrying on its own).
    fn stalled(&self) -> bool {
        self.retry() != Retry::Backoff
    }

    /// Whether only a change the watches deliver (the Component, a Secret) can fix it.
    fn is_permanent(&self) -> bool {
        self.retry() == Retry::AwaitChange
    }
}

/// A failure as a KeyValueBucket reports it: the condition it sets False, its reason and message,
/// when to retry, and whether it is Stalled. The first one of a reconcile is `Ready`'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The detail condition it sets False.
    pub condition: ConditionType,
    /// The CamelCase reason.
    pub reason: String,
    /// What is wrong and what to do; never a secret value.
    pub message: String,
    /// When to look again.
    pub retry: Retry,
    /// kstatus: Stalled (someone must act) rather than Reconciling.
    pub stalled: bool,
}

impl Problem {
    /// A problem with the given reason: Stalled unless it is retried with back-off.
    pub fn new(
        condition: ConditionType,
        reason: impl Into<String>,
        message: impl Into<String>,
        retry: Retry,
    ) -> Self {
        Self {
            condition,
            reason: reason.into(),
            message: message.into(),
            stalled: retry != Retry::Backoff,
            retry,
        }
    }

    /// A failure of the step that reports `condition`, as the failure classifies itself.
    pub fn of(condition: ConditionType, failure: &(impl Failure + std::fmt::Display)) -> Self {
        Self {
            condition,
            reason: failure.reason().to_owned(),
            message: failure.to_string(),
            retry: failure.retry(),
            stalled: failure.stalled(),
        }
    }

    /// Whether only a change of the manifest (or a Secret) can fix it. False only for what
    /// retrying heals (a JWT that is not valid yet, a failed read).
    pub fn is_permanent(&self) -> bool {
        self.retry == Retry::AwaitChange
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Refused(Retry);

    impl Failure for Refused {
        fn reason(&self) -> &'static str {
            "Refused"
        }
        fn retry(&self) -> Retry {
            self.0
        }
    }

    #[test]
    fn only_back_off_is_reconciling_and_only_await_change_is_permanent() {
        for (retry, stalled, permanent) in [
            (Retry::Resync, true, false),
            (Retry::Backoff, false, false),
            (Retry::AwaitChange, true, true),
        ] {
            assert_eq!(Refused(retry).stalled(), stalled, "{retry:?}");
            assert_eq!(Refused(retry).is_permanent(), permanent, "{retry:?}");
        }
    }
}
