//! The republish of a bucket: what a Component asks for, what the live stream has, and the check
//! of the annotations against the bucket's keys.

use async_nats::jetstream::stream;

use super::desired::all_keys;
use crate::settings::{BucketSettings, Setting, SettingsError};

/// The republish a Component asks for, its source filled in (every key of the bucket).
pub(super) fn republish(bucket: &str, s: &BucketSettings) -> Option<stream::Republish> {
    Some(stream::Republish {
        source: s
            .republish_source
            .clone()
            .unwrap_or_else(|| all_keys(bucket)),
        destination: s.republish_destination.clone()?,
        headers_only: s.republish_headers_only,
    })
}

/// A live republish with its source normalised: empty and `>` mean every subject of the
/// stream, which for a KV bucket is every key.
pub(super) fn live_republish(bucket: &str, live: &stream::Config) -> Option<stream::Republish> {
    live.republish.as_ref().map(|r| stream::Republish {
        source: if r.source.is_empty() || r.source == ">" {
            all_keys(bucket)
        } else {
            r.source.clone()
        },
        destination: r.destination.clone(),
        headers_only: r.headers_only,
    })
}

/// Checks what the republish annotations ask against the bucket (known once the store's config
/// is): the source must be within the bucket's keys, the destination must not lead back into the
/// bucket (nats-server refuses the cycle), and the destination's `>` and `$N` / `{{wildcard(N)}}`
/// references must match the source's wildcards. A source naming every key is stored as `None`.
pub fn check_republish(bucket: &str, s: &mut BucketSettings) -> Result<(), SettingsError> {
    let Some(destination) = s.republish_destination.clone() else {
        return Ok(());
    };
    let keys = all_keys(bucket);
    let source = s.republish_source.clone().unwrap_or_else(|| keys.clone());
    let invalid =
        |setting: Setting, value: &str, expected: String| SettingsError::InvalidAnnotation {
            annotation: setting.annotation().to_owned(),
            value: crate::settings::shorten(value),
            expected,
        };
    if !crate::nats::stream::subject::covers(&keys, &source) {
        return Err(invalid(
            Setting::RepublishSource,
            &source,
            format!("a subject within the bucket's keys {keys}, e.g. {keys} for every key"),
        ));
    }
    if crate::nats::stream::subject::collide(&destination, &keys) {
        return Err(invalid(
            Setting::RepublishDestination,
            &destination,
            format!(
                "a subject outside the bucket's keys {keys}: republishing into the bucket would \
                 store every value again, in a loop (nats-server refuses it)"
            ),
        ));
    }
    let tokens: Vec<&str> = source.split('.').collect();
    let wildcards = tokens.iter().filter(|t| **t == "*").count();
    let source_rest = tokens.last() == Some(&">");
    let destination_rest = destination.ends_with(".>") || destination == ">";
    if destination.split('.').any(|t| t == "*") || source_rest != destination_rest {
        return Err(invalid(
            Setting::RepublishDestination,
            &destination,
            "a subject with no *, ending in > exactly when the source does (the rest of the \
             subject is carried over); the source's * are referenced as $1, $2... in order"
                .into(),
        ));
    }
    if let Some(n) = destination
        .split('.')
        .filter_map(wildcard_reference)
        .find(|n| *n == 0 || *n > wildcards)
    {
        return Err(invalid(
            Setting::RepublishDestination,
            &destination,
            format!(
                "references to the source's * from $1 to ${wildcards} only (it refers to ${n}; \
                 the source {source} has {wildcards})"
            ),
        ));
    }
    if source == keys {
        s.republish_source = None;
    }
    Ok(())
}

/// The source wildcard a destination token refers to: `$N` or `{{wildcard(N)}}`.
fn wildcard_reference(token: &str) -> Option<usize> {
    if let Some(n) = token.strip_prefix('$') {
        return n.parse().ok();
    }
    let inner = token.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let (name, args) = inner.split_once('(')?;
    if !name.trim().eq_ignore_ascii_case("wildcard") {
        return None;
    }
    args.strip_suffix(')')?.trim().parse().ok()
}

pub(super) fn republish_text(r: Option<&stream::Republish>) -> String {
    match r {
        None => "none".into(),
        Some(r) => format!(
            "{} to {}{}",
            crate::nats::remote_text(&r.source),
            crate::nats::remote_text(&r.destination),
            if r.headers_only {
                " (headers only)"
            } else {
                ""
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure as _;

    #[test]
    fn republish_is_checked_against_the_bucket() {
        let check = |source: Option<&str>, destination: &str| {
            let mut s = BucketSettings {
                republish_source: source.map(str::to_owned),
                republish_destination: Some(destination.to_owned()),
                ..BucketSettings::default()
            };
            check_republish("orders", &mut s).map(|()| s.republish_source)
        };
        assert_eq!(check(None, "changes.>"), Ok(None));
        assert_eq!(
            check(Some("$KV.orders.>"), "changes.>"),
            Ok(None),
            "normalised"
        );
        assert_eq!(
            check(Some("$KV.orders.*.new"), "changes.$1"),
            Ok(Some("$KV.orders.*.new".into()))
        );
        assert!(check(Some("$KV.orders.*"), "changes.{{wildcard(1)}}").is_ok());
        assert!(check(Some("$KV.orders.eu"), "changes.eu").is_ok());
        for (source, destination, annotation, mentions) in [
            (
                Some("$KV.other.>"),
                "changes.>",
                "republish-source",
                "$KV.orders.>",
            ),
            (
                Some("orders.>"),
                "changes.>",
                "republish-source",
                "within the bucket's keys",
            ),
            (
                None,
                "$KV.orders.copy.>",
                "republish-destination",
                "in a loop",
            ),
            (None, ">", "republish-destination", "in a loop"),
            (None, "changes.*", "republish-destination", "no *"),
            (None, "changes", "republish-destination", "ending in >"),
            (
                Some("$KV.orders.eu"),
                "changes.>",
                "republish-destination",
                "ending in >",
            ),
            (
                Some("$KV.orders.*"),
                "changes.$2",
                "republish-destination",
                "$2",
            ),
            (
                Some("$KV.orders.*"),
                "changes.{{wildcard(0)}}",
                "republish-destination",
                "$0",
            ),
        ] {
            let e = check(source, destination).expect_err(destination);
            assert_eq!(e.reason(), "InvalidAnnotation");
            let msg = e.to_string();
            assert!(msg.contains(annotation) && msg.contains(mentions), "{msg}");
        }
    }
}
