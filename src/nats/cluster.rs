//! A bucket's stream in a JetStream cluster: where it runs (status facts), whether it can take
//! writes (a leader and a quorum of replicas), and when a change of replicas is safe.
//!
//! Decided from the stream info the server already sent (no extra request), without I/O.

use async_nats::jetstream::stream;

use super::NatsError;
use crate::crd::{ReplicaState, ReplicaStatus, StreamCluster};

/// The stream's cluster facts for status; None when the server is not clustered (a single
/// server reports a cluster without a name).
pub fn stream_cluster(info: &stream::Info) -> Option<StreamCluster> {
    let cluster = info.cluster.as_ref()?;
    cluster.name.as_ref()?;
    let leader = cluster.leader.clone().filter(|l| !l.is_empty());
    let mut replicas: Vec<ReplicaStatus> = cluster
        .replicas
        .iter()
        // Without a leader the list names every peer, the answering one too.
        .filter(|p| leader.as_deref() != Some(p.name.as_str()))
        .map(|p| ReplicaStatus {
            server: p.name.clone(),
            state: replica_state(p),
        })
        .collect();
    // Stable order, so a status written twice is the same.
    replicas.sort_by(|a, b| a.server.cmp(&b.server));
    Some(StreamCluster {
        name: cluster.name.clone(),
        leader,
        replicas,
    })
}

fn replica_state(p: &stream::PeerInfo) -> ReplicaState {
    if p.offline {
        ReplicaState::Offline
    } else if p.current {
        ReplicaState::Current
    } else {
        ReplicaState::Lagging
    }
}

/// Why the stream cannot take writes now, if it cannot: too many replicas down (quorum lost), or
/// no leader yet (an election after the leader was lost). Both heal when servers come back.
pub fn availability_problem(info: &stream::Info) -> Option<NatsError> {
    let facts = stream_cluster(info)?;
    let replicas = info.config.num_replicas.max(1);
    // With a leader, every replica not offline still votes. Without one, the list names every
    // peer, and only the current ones are known to be there (the others are not heard from).
    let reachable = |r: &&ReplicaStatus| match facts.leader {
        Some(_) => r.state != ReplicaState::Offline,
        None => r.state == ReplicaState::Current,
    };
    let down: Vec<String> = facts
        .replicas
        .iter()
        .filter(|r| !reachable(r))
        .map(|r| super::remote_text(&r.server))
        .collect();
    let up = usize::from(facts.leader.is_some()) + facts.replicas.len() - down.len();
    let quorum = replicas / 2 + 1;
    if up < quorum {
        return Some(NatsError::QuorumLost {
            stream: info.config.name.clone(),
            replicas,
            up,
            down,
        });
    }
    if facts.leader.is_none() {
        return Some(NatsError::NoStreamLeader {
            stream: info.config.name.clone(),
        });
    }
    None
}

/// Why lowering the stream's replicas to `want` is not safe now, if it is not. NATS keeps the
/// leader's copy when it scales down, and removes the others; that loses nothing only while the
/// stream has a leader and every replica is current, so a scale-down waits for that.
pub fn scale_down_blocker(info: &stream::Info, want: usize) -> Option<String> {
    if want >= info.config.num_replicas.max(1) {
        return None;
    }
    let facts = stream_cluster(info)?;
    if facts.leader.is_none() {
        return Some("the stream has no leader".into());
    }
    let behind: Vec<String> = facts
        .replicas
        .iter()
        .filter(|r| r.state != ReplicaState::Current)
        .map(|r| format!("{} is {}", r.server, state_name(r.state)))
        .collect();
    (!behind.is_empty()).then(|| behind.join(", "))
}

fn state_name(s: ReplicaState) -> &'static str {
    match s {
        ReplicaState::Current => "current",
        ReplicaState::Lagging => "lagging",
        ReplicaState::Offline => "offline",
    }
}

/// What a create or update asked of the cluster's placement, for a `NoSuitablePlacement`
/// message: the server names at most the first unmatched tag.
pub fn placement_asked(config: &stream::Config) -> String {
    let mut asked = vec![format!("replicas {}", config.num_replicas.max(1))];
    if let Some(p) = &config.placement {
        if let Some(cluster) = p.cluster.as_ref().filter(|c| !c.is_empty()) {
            asked.push(format!("cluster {cluster}"));
        }
        if !p.tags.is_empty() {
            asked.push(format!("tags {}", p.tags.join(", ")));
        }
    }
    asked.join(", ")
}

/// Adds what was asked to a `NoSuitablePlacement` error; other errors pass unchanged.
pub fn with_placement_asked(e: NatsError, config: &stream::Config) -> NatsError {
    match e {
        NatsError::NoSuitablePlacement { detail } => NatsError::NoSuitablePlacement {
            detail: format!(
                "no server (or not enough servers) matches {}: {detail}",
                placement_asked(config)
            ),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;
    use std::time::Duration;

    fn peer(name: &str, current: bool, offline: bool) -> stream::PeerInfo {
        stream::PeerInfo {
            name: name.into(),
            current,
            active: Duration::from_millis(100),
            offline,
            lag: None,
        }
    }

    fn info(replicas: usize, leader: Option<&str>, peers: Vec<stream::PeerInfo>) -> stream::Info {
        let config = stream::Config {
            name: "KV_orders".into(),
            num_replicas: replicas,
            ..Default::default()
        };
        let mut info: stream::Info = serde_json::from_value(serde_json::json!({
            "config": config,
            "created": "2026-01-01T00:00:00Z",
            "state": {"messages": 0, "bytes": 0, "first_seq": 0, "first_ts": "0001-01-01T00:00:00Z",
                      "last_seq": 0, "last_ts": "0001-01-01T00:00:00Z", "consumer_count": 0},
        }))
        .unwrap();
        info.cluster = Some(stream::ClusterInfo {
            name: Some("east".into()),
            leader: leader.map(Into::into),
            replicas: peers,
            ..Default::default()
        });
        info
    }

    #[test]
    fn a_single_server_has_no_cluster_facts() {
        let mut i = info(1, Some("solo"), vec![]);
        i.cluster.as_mut().unwrap().name = None;
        assert_eq!(stream_cluster(&i), None);
        assert!(availability_problem(&i).is_none());
        assert_eq!(scale_down_blocker(&i, 1), None);
    }

    #[test]
    fn cluster_facts_name_the_leader_and_each_replica_state() {
        let i = info(
            3,
            Some("n1"),
            vec![peer("n3", false, true), peer("n2", false, false)],
        );
        let c = stream_cluster(&i).unwrap();
        assert_eq!(c.name.as_deref(), Some("east"));
        assert_eq!(c.leader.as_deref(), Some("n1"));
        assert_eq!(
            c.replicas,
            [
                ReplicaStatus {
                    server: "n2".into(),
                    state: ReplicaState::Lagging
                },
                ReplicaStatus {
                    server: "n3".into(),
                    state: ReplicaState::Offline
                },
            ]
        );
    }

    #[test]
    fn two_of_three_down_is_quorum_lost_one_is_not() {
        let one_down = info(
            3,
            Some("n1"),
            vec![peer("n2", true, false), peer("n3", true, true)],
        );
        assert!(availability_problem(&one_down).is_none());
        // The leader has not noticed yet: it still names itself.
        let two_down = info(
            3,
            Some("n1"),
            vec![peer("n2", false, true), peer("n3", true, true)],
        );
        let e = availability_problem(&two_down).unwrap();
        assert_eq!(e.reason(), "QuorumLost");
        let text = e.to_string();
        assert!(text.contains("1 of 3") && text.contains("n2, n3"), "{text}");
        // It has stepped down: no leader, every peer listed.
        let leaderless = info(
            3,
            None,
            vec![
                peer("n1", true, false),
                peer("n2", false, true),
                peer("n3", false, true),
            ],
        );
        assert_eq!(
            availability_problem(&leaderless).unwrap().reason(),
            "QuorumLost"
        );
        // Without a leader, a peer not current is not counted: it may be gone.
        let unheard = info(
            3,
            None,
            vec![
                peer("n1", true, false),
                peer("n2", false, false),
                peer("n3", false, false),
            ],
        );
        let text = availability_problem(&unheard).unwrap().to_string();
        assert!(text.contains("1 of 3") && text.contains("n2, n3"), "{text}");
        let electing = info(
            3,
            None,
            vec![
                peer("n1", true, false),
                peer("n2", true, false),
                peer("n3", false, true),
            ],
        );
        assert_eq!(
            availability_problem(&electing).unwrap().reason(),
            "NoStreamLeader"
        );
        assert!(!availability_problem(&electing).unwrap().stalled());
    }

    #[test]
    fn scale_down_waits_for_every_replica_to_be_current() {
        let healthy = info(
            3,
            Some("n1"),
            vec![peer("n2", true, false), peer("n3", true, false)],
        );
        assert_eq!(scale_down_blocker(&healthy, 1), None);
        assert_eq!(scale_down_blocker(&healthy, 3), None);
        let behind = info(
            3,
            Some("n1"),
            vec![peer("n2", false, false), peer("n3", true, true)],
        );
        assert_eq!(
            scale_down_blocker(&behind, 1).as_deref(),
            Some("n2 is lagging, n3 is offline")
        );
        // Scaling up is never held back.
        assert_eq!(scale_down_blocker(&behind, 5), None);
    }

    #[test]
    fn a_placement_failure_names_what_was_asked() {
        let config = stream::Config {
            name: "KV_orders".into(),
            num_replicas: 3,
            placement: Some(stream::Placement {
                cluster: None,
                tags: vec!["gpu".into(), "az:1".into()],
            }),
            ..Default::default()
        };
        let e = with_placement_asked(
            NatsError::NoSuitablePlacement {
                detail: "no suitable peers for placement".into(),
            },
            &config,
        );
        let text = e.to_string();
        assert!(text.contains("replicas 3, tags gpu, az:1"), "{text}");
        assert_eq!(e.reason(), "NoSuitablePlacement");
    }
}
