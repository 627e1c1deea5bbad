//! What enforce mode would do to one stream (a bucket's or a pub/sub's), described from a plan
//! without carrying it out: what audit mode shows in a status, and what a dry run prints. Each
//! kind's plan describes itself into this one shape (`bucket::Plan::describe`,
//! `pubsub::stream::StreamPlan::describe`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Change;

/// What enforce mode would do to one stream, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    /// The stream (`KV_<bucket>` for a bucket), as shown (a name from a Secret is not).
    pub stream: String,
    /// What would be done.
    pub action: PlannedAction,
    /// The settings that differ, field by field (for an update, and for a refusal of one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<PlannedChange>,
    /// Why it would be refused: the condition reason enforce mode would report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What would be done, in words.
    pub message: String,
}

/// What enforce mode would do.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PlannedAction {
    /// Create the stream (again, when it was deleted behind the operator's back).
    Create,
    /// Change it in place: the `changes`.
    Update,
    /// Delete it (a Component deleted with `deletion-policy: delete`).
    Delete,
    /// Nothing: the stream is as asked, or it is gone and only verified, or it is kept.
    None,
    /// Nothing, and report why: `reason`.
    Refuse,
}

impl PlannedAction {
    /// Whether enforce mode would send a request that changes the stream.
    pub fn mutates(self) -> bool {
        matches!(self, Self::Create | Self::Update | Self::Delete)
    }
}

/// One setting that differs: the live value and the one asked for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedChange {
    /// The setting, named as in the status's config (`history`, `maxBytes`, `subjects`, ...).
    pub field: String,
    /// Its value now.
    pub live: String,
    /// The value enforce mode would set.
    pub desired: String,
}

impl From<&Change> for PlannedChange {
    fn from(c: &Change) -> Self {
        Self {
            field: c.field.name().to_owned(),
            live: c.live.clone(),
            desired: c.desired.clone(),
        }
    }
}

impl Planned {
    /// A plan of `action` on `stream`.
    pub fn new(stream: &str, action: PlannedAction, message: impl Into<String>) -> Self {
        Self {
            stream: stream.to_owned(),
            action,
            changes: Vec::new(),
            reason: None,
            message: message.into(),
        }
    }

    /// With the settings that differ.
    pub fn with_changes(mut self, changes: &[Change]) -> Self {
        self.changes.extend(changes.iter().map(PlannedChange::from));
        self
    }

    /// Refused for `reason`.
    pub fn refused(stream: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.to_owned()),
            ..Self::new(stream, PlannedAction::Refuse, message)
        }
    }

    /// One line: `update KV_orders: history 1 -> 5, ttl 0s -> 1h`.
    pub fn summary(&self) -> String {
        let action = match self.action {
            PlannedAction::Create => "create",
            PlannedAction::Update => "update",
            PlannedAction::Delete => "delete",
            PlannedAction::None => "nothing to do for",
            PlannedAction::Refuse => "refuse",
        };
        let mut line = format!("{action} {}", self.stream);
        if !self.changes.is_empty() {
            let changes: Vec<String> = self
                .changes
                .iter()
                .map(|c| format!("{} {} -> {}", c.field, c.live, c.desired))
                .collect();
            line.push_str(": ");
            line.push_str(&changes.join(", "));
        }
        if let Some(reason) = &self.reason {
            line.push_str(&format!(" ({reason})"));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::stream::{ChangeKind, Field};

    #[test]
    fn a_summary_lists_each_change_and_the_reason() {
        let change = Change {
            field: Field::History,
            live: "1".into(),
            desired: "5".into(),
            kind: ChangeKind::Safe,
        };
        let update = Planned::new("KV_a", PlannedAction::Update, "x").with_changes(&[change]);
        assert_eq!(update.summary(), "update KV_a: history 1 -> 5");
        let refused = Planned::refused("KV_b", "DataLossRefused", "x");
        assert_eq!(refused.summary(), "refuse KV_b (DataLossRefused)");
        assert!(update.action.mutates() && !refused.action.mutates());
    }
}
