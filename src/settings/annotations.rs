//! Reading the annotations: each bucket setting and policy parsed from its text, or refused with
//! what it accepts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{
    ALLOW_DATA_LOSS_ANNOTATION, ANNOTATION_PREFIX, BucketSettings, CREDENTIALS_ANNOTATION,
    CredentialsMode, DELETION_POLICY_ANNOTATION, DeletionPolicy, MAX_HISTORY, MAX_METADATA_ITEMS,
    MAX_METADATA_KEY, MAX_METADATA_TEXT, MAX_METADATA_VALUE, MAX_REPLICAS, MIN_LIMIT_MARKER_TTL,
    MIN_TTL, ON_EXISTING_ANNOTATION, OnExisting, POLICY_ANNOTATIONS, STATUS_ANNOTATIONS, Setting,
    SettingsError, Storage, is_reserved_metadata_key, shorten,
};

/// Reads the bucket settings and policies from a Component's annotations.
///
/// Values are trimmed (except `description`); keywords and booleans match case-insensitively.
/// Annotations outside `jetstreamkv.io/` and the operator's own status annotations are ignored.
/// The first problem in key order is returned, so the same annotations always give the same
/// error.
pub fn from_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<BucketSettings, SettingsError> {
    super::refuse_inapplicable(annotations, super::ComponentKind::StateStore)?;
    let mut settings = BucketSettings::default();
    for (key, raw) in annotations {
        if !key.starts_with(ANNOTATION_PREFIX) || STATUS_ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        let value = raw.trim();
        let invalid = |expected: &str| SettingsError::InvalidAnnotation {
            annotation: key.clone(),
            value: shorten(raw),
            expected: expected.to_owned(),
        };
        if let Some(Setting::Metadata) = Setting::from_annotation(key) {
            settings.metadata = metadata(key, value)?;
            settings.explicit.insert(Setting::Metadata);
        } else if let Some(setting) = Setting::from_annotation(key) {
            apply(&mut settings, setting, raw, value).map_err(invalid)?;
            settings.explicit.insert(setting);
        } else {
            apply_policy(&mut settings, key, value)
                .ok_or_else(|| unknown(key))?
                .map_err(invalid)?;
        }
    }
    // The source and headers-only shape a republish; without a destination there is none.
    if settings.republish_destination.is_none() {
        let shaped = [
            (
                Setting::RepublishSource,
                settings.republish_source.is_some(),
            ),
            (
                Setting::RepublishHeadersOnly,
                settings.republish_headers_only,
            ),
        ];
        for (setting, set) in shaped {
            if set {
                let annotation = setting.annotation();
                return Err(SettingsError::InvalidAnnotation {
                    annotation: annotation.to_owned(),
                    value: shorten(annotations.get(annotation).map_or("", String::as_str)),
                    expected: format!(
                        "it together with {}, which says where values are republished",
                        Setting::RepublishDestination.annotation()
                    ),
                });
            }
        }
    }
    Ok(settings)
}

/// Sets one bucket setting, or says what it accepts.
fn apply(
    settings: &mut BucketSettings,
    setting: Setting,
    raw: &str,
    value: &str,
) -> Result<(), &'static str> {
    match setting {
        Setting::History => {
            settings.history = in_range(
                value,
                1..=MAX_HISTORY,
                "an integer from 1 to 64 (values kept per key)",
            )?;
        }
        Setting::Ttl => {
            const EXPECTED: &str = "a duration such as 90s, 30m, 1h30m or 24h (units ns, us, ms, \
                s, m, h), at least 100ms, or 0 for no TTL";
            settings.ttl = duration_or_off(value, MIN_TTL, EXPECTED)?;
        }
        Setting::MaxBytes => {
            const EXPECTED: &str = "a positive size in bytes, optionally with a suffix Ki, Mi, \
                Gi, Ti (powers of 1024) or K, M, G, T (powers of 1000), e.g. 512Mi, or -1 for \
                unlimited";
            settings.max_bytes = parse_limit(value).ok_or(EXPECTED)?;
        }
        Setting::MaxValueSize => settings.max_value_size = max_value_size(value)?,
        Setting::Storage => {
            settings.storage = Storage::parse(value).ok_or("\"file\" or \"memory\"")?;
        }
        Setting::Replicas => {
            settings.replicas = in_range(value, 1..=MAX_REPLICAS, "an integer from 1 to 5")?;
        }
        Setting::Compression => {
            settings.compression = if value.eq_ignore_ascii_case("s2") {
                true
            } else {
                boolean(value).ok_or("\"true\", \"s2\" (the same as true) or \"false\"")?
            };
        }
        // Free text: kept as written, so that it compares equal to what NATS stores.
        Setting::Description => {
            settings.description = Some(raw.to_owned()).filter(|d| !d.is_empty())
        }
        Setting::PlacementCluster => {
            settings.placement_cluster = Some(value.to_owned()).filter(|c| !c.is_empty());
        }
        Setting::PlacementTags => {
            settings.placement_tags = value
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
        }
        Setting::LimitMarkerTtl => {
            const EXPECTED: &str = "a duration of at least 1s such as 30s, 5m or 1h (how long \
                the marker of an expired key is kept; it turns per-key TTL on), or 0 for off";
            settings.limit_marker_ttl = duration_or_off(value, MIN_LIMIT_MARKER_TTL, EXPECTED)?;
        }
        // Read by `metadata`, which says which item is wrong.
        Setting::Metadata => {}
        Setting::RepublishSource => {
            settings.republish_source = subject_or_none(
                value,
                "a NATS subject within the bucket's keys, e.g. $KV.<bucket>.orders.> (tokens \
                 separated by dots, * and > as whole tokens, > last)",
            )?;
        }
        Setting::RepublishDestination => {
            settings.republish_destination = subject_or_none(
                value,
                "a NATS subject with no *, e.g. changes.orders.> (> only when the source has \
                 it too), or empty for no republish",
            )?;
        }
        Setting::RepublishHeadersOnly => {
            settings.republish_headers_only = boolean(value)
                .ok_or("\"true\" (republish the headers, not the values) or \"false\"")?;
        }
    }
    Ok(())
}

/// An integer within `range`.
fn in_range<T: std::str::FromStr + PartialOrd>(
    value: &str,
    range: std::ops::RangeInclusive<T>,
    expected: &'static str,
) -> Result<T, &'static str> {
    value
        .parse::<T>()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or(expected)
}

/// A duration of at least `min`, or 0 for off (`None`).
fn duration_or_off(
    value: &str,
    min: Duration,
    expected: &'static str,
) -> Result<Option<Duration>, &'static str> {
    let d = crate::duration::parse(value).ok_or(expected)?;
    if !d.is_zero() && d < min {
        return Err(expected);
    }
    Ok(Some(d).filter(|d| !d.is_zero()))
}

/// The largest value NATS takes (an `i32`), or -1 for unlimited (`None`).
pub(crate) fn max_value_size(value: &str) -> Result<Option<i32>, &'static str> {
    const EXPECTED: &str = "a positive size in bytes up to 2147483647 (2Gi - 1), \
        optionally with a suffix Ki, Mi, Gi (powers of 1024) or K, M, G (powers of \
        1000), e.g. 1Mi, or -1 for unlimited";
    match parse_limit(value).ok_or(EXPECTED)? {
        None => Ok(None),
        Some(size) => Ok(Some(i32::try_from(size).map_err(|_| EXPECTED)?)),
    }
}

/// A NATS subject, or empty for none.
fn subject_or_none(value: &str, expected: &'static str) -> Result<Option<String>, &'static str> {
    Ok(Some(subject(value).ok_or(expected)?).filter(|s| !s.is_empty()))
}

/// A NATS subject as written (syntax only: what it may match is checked where the bucket is
/// known), or empty; `None` when it is not one.
fn subject(value: &str) -> Option<String> {
    const MAX_SUBJECT: usize = 255;
    if value.is_empty() {
        return Some(String::new());
    }
    if value.len() > MAX_SUBJECT || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let tokens: Vec<&str> = value.split('.').collect();
    let well_formed = tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && (t.len() == 1 || !t.contains(['*', '>']))
            && (*t != ">" || i + 1 == tokens.len())
    });
    well_formed.then(|| value.to_owned())
}

/// Reads `jetstreamkv.io/metadata`: a JSON object of text values, e.g. `{"team": "shop"}`.
/// The text is bounded before it is parsed; items, keys and values are bounded after; a
/// reserved key (the operator's marks, the server's) has its own reason.
fn metadata(annotation: &str, value: &str) -> Result<BTreeMap<String, String>, SettingsError> {
    let invalid = |why: String| SettingsError::InvalidAnnotation {
        annotation: annotation.to_owned(),
        value: shorten(value),
        expected: format!(
            "a JSON object of at most {MAX_METADATA_ITEMS} text values, e.g. \
             {{\"team\": \"shop\", \"tier\": \"gold\"}}, or empty for none ({why})"
        ),
    };
    if value.is_empty() {
        return Ok(BTreeMap::new());
    }
    if value.len() > MAX_METADATA_TEXT {
        return Err(invalid(format!(
            "it is {} bytes long, more than {MAX_METADATA_TEXT}",
            value.len()
        )));
    }
    let Entries(entries) = serde_json::from_str(value)
        .map_err(|e| invalid(format!("it is not a JSON object of text values: {e}")))?;
    if entries.len() > MAX_METADATA_ITEMS {
        return Err(invalid(format!("it has {} items", entries.len())));
    }
    let mut out = BTreeMap::new();
    for (key, item) in entries {
        if is_reserved_metadata_key(&key) {
            return Err(SettingsError::ReservedMetadataKey {
                annotation: annotation.to_owned(),
                key: shorten(&key),
            });
        }
        let shown = shorten(&key);
        if key.is_empty() || key.len() > MAX_METADATA_KEY || key.chars().any(char::is_control) {
            return Err(invalid(format!(
                "key {shown:?} must have 1 to {MAX_METADATA_KEY} bytes and no control characters"
            )));
        }
        let serde_json::Value::String(text) = item else {
            return Err(invalid(format!(
                "the value of {shown:?} is not text: quote it"
            )));
        };
        if text.len() > MAX_METADATA_VALUE {
            return Err(invalid(format!(
                "the value of {shown:?} is longer than {MAX_METADATA_VALUE} bytes"
            )));
        }
        if out.insert(key, text).is_some() {
            return Err(invalid(format!("key {shown:?} is given twice")));
        }
    }
    Ok(out)
}

/// A JSON object's entries in order, duplicates kept (a map would silently keep the last one).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// Sets one policy, or says what it accepts; `None` when `key` is no policy annotation.
fn apply_policy(
    settings: &mut BucketSettings,
    key: &str,
    value: &str,
) -> Option<Result<(), &'static str>> {
    let result = match key {
        ON_EXISTING_ANNOTATION => OnExisting::parse(value)
            .map(|v| settings.on_existing = v)
            .ok_or("\"verify\" (check the bucket, never change it) or \"adopt\" (manage it)"),
        DELETION_POLICY_ANNOTATION => DeletionPolicy::parse(value)
            .map(|v| settings.deletion_policy = v)
            .ok_or("\"retain\" (keep the bucket) or \"delete\" (delete it with the Component)"),
        ALLOW_DATA_LOSS_ANNOTATION => boolean(value)
            .map(|v| settings.allow_data_loss = v)
            .ok_or("\"true\" or \"false\""),
        CREDENTIALS_ANNOTATION => CredentialsMode::parse(value)
            .map(|v| settings.credentials = v)
            .ok_or(
                "\"own\" (the credentials the Component names) or \"mint\" (a user the \
                 operator mints for it, written to the Secret its jwt and seedKey name)",
            ),
        _ => return None,
    };
    Some(result)
}

/// The annotation values of an enum setting.
trait Keyword: Copy + 'static {
    const ALL: &'static [Self];

    fn keyword(self) -> &'static str;

    /// The variant `value` names, matched case-insensitively.
    fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.keyword().eq_ignore_ascii_case(value))
    }
}

impl Keyword for Storage {
    const ALL: &'static [Self] = &[Storage::File, Storage::Memory];
    fn keyword(self) -> &'static str {
        self.as_str()
    }
}

impl Keyword for OnExisting {
    const ALL: &'static [Self] = &[OnExisting::Verify, OnExisting::Adopt];
    fn keyword(self) -> &'static str {
        self.as_str()
    }
}

impl Keyword for CredentialsMode {
    const ALL: &'static [Self] = &[CredentialsMode::Own, CredentialsMode::Mint];
    fn keyword(self) -> &'static str {
        self.as_str()
    }
}

impl Keyword for DeletionPolicy {
    const ALL: &'static [Self] = &[DeletionPolicy::Retain, DeletionPolicy::Delete];
    fn keyword(self) -> &'static str {
        self.as_str()
    }
}

pub(crate) fn boolean(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A size limit: `-1` is unlimited (`None`); otherwise a positive size.
pub(crate) fn parse_limit(value: &str) -> Option<Option<i64>> {
    if value == "-1" {
        return Some(None);
    }
    parse_size(value).filter(|s| *s > 0).map(Some)
}

/// A size in bytes with an optional Kubernetes-style suffix: binary `Ki`..`Ti`, decimal `K`
/// (or `k`)..`T`. Decimal suffixes mean powers of 1000 here as in Kubernetes quantities and in
/// the nats-server configuration, so `1G` is the same number for the cluster and for NATS.
fn parse_size(value: &str) -> Option<i64> {
    const SUFFIXES: [(&str, i64); 9] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("K", 1_000),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, multiplier) = SUFFIXES
        .iter()
        .find_map(|(suffix, m)| value.strip_suffix(suffix).map(|d| (d, *m)))
        .unwrap_or((value, 1));
    // Digits only: no sign, no spaces between the number and its suffix.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()?.checked_mul(multiplier)
}

fn unknown(key: &str) -> SettingsError {
    let known: Vec<&str> = Setting::ALL
        .iter()
        .map(|s| s.annotation())
        .chain(POLICY_ANNOTATIONS)
        .collect();
    // Compare the names after the prefix, ignoring case: a couple of edits away is a typo, as
    // long as the edits are not most of the name.
    let name = key
        .trim_start_matches(ANNOTATION_PREFIX)
        .to_ascii_lowercase();
    let hint = known
        .iter()
        .map(|k| {
            (
                edit_distance(k.trim_start_matches(ANNOTATION_PREFIX), &name),
                *k,
            )
        })
        .filter(|(d, k)| *d <= 2 && 2 * d < k.len() - ANNOTATION_PREFIX.len())
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default();
    SettingsError::UnknownAnnotation {
        annotation: key.to_owned(),
        hint,
        known: known.join(", "),
    }
}

/// Levenshtein distance, for suggesting the annotation a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::failure::Failure as _;
    use crate::settings::{OBSERVED_GENERATION_ANNOTATION, READY_ANNOTATION, REASON_ANNOTATION};

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn read(key: &str, value: &str) -> Result<BucketSettings, SettingsError> {
        from_annotations(&annotations(&[(key, value)]))
    }

    /// Reads one annotation that must be accepted; checks it is recorded as explicit (for bucket
    /// settings) and returns the settings.
    fn good(key: &str, value: &str) -> BucketSettings {
        let s = read(key, value).unwrap_or_else(|e| panic!("{key}={value:?}: {e}"));
        let want: BTreeSet<Setting> = Setting::from_annotation(key).into_iter().collect();
        assert_eq!(s.explicit, want, "{key}={value:?}");
        s
    }

    /// Reads one annotation that must be refused, and checks the message.
    fn bad(key: &str, value: &str, expected_mentions: &str) {
        let e = read(key, value).expect_err(&format!("{key}={value:?} accepted"));
        assert_eq!(e.reason(), "InvalidAnnotation", "{key}={value:?}");
        assert!(e.is_permanent());
        let msg = e.to_string();
        assert!(msg.contains(key), "{msg}");
        assert!(msg.contains(&format!("{:?}", shorten(value))), "{msg}");
        assert!(msg.contains(expected_mentions), "{msg}");
    }

    #[test]
    fn defaults_fit_dapr() {
        let s = from_annotations(&BTreeMap::new()).unwrap();
        assert_eq!(s, BucketSettings::default());
        assert_eq!(s.history, 1);
        assert_eq!(s.ttl, None);
        assert_eq!(s.max_bytes, None);
        assert_eq!(s.max_value_size, None);
        assert_eq!(s.storage, Storage::File);
        assert_eq!(s.replicas, 1);
        assert!(!s.compression);
        assert_eq!(s.description, None);
        assert_eq!(s.placement_cluster, None);
        assert!(s.placement_tags.is_empty());
        assert_eq!(s.on_existing, OnExisting::Verify);
        assert_eq!(s.deletion_policy, DeletionPolicy::Retain);
        assert!(!s.allow_data_loss);
        assert!(s.explicit.is_empty());
    }

    #[test]
    fn other_and_status_annotations_are_ignored() {
        let s = from_annotations(&annotations(&[
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            ("dapr.io/enabled", "true"),
            ("other.jetstreamkv.io/history", "x"),
            ("jetstreamkv.io.example/history", "x"),
            (READY_ANNOTATION, "false"),
            (REASON_ANNOTATION, "MissingBucket"),
            (OBSERVED_GENERATION_ANNOTATION, "7"),
        ]))
        .unwrap();
        assert_eq!(s, BucketSettings::default());
    }

    #[test]
    fn history() {
        for (v, want) in [("1", 1), ("5", 5), ("64", 64), (" 10 ", 10)] {
            assert_eq!(good("jetstreamkv.io/history", v).history, want, "{v}");
        }
        for v in [
            "0",
            "65",
            "-1",
            "",
            "one",
            "1.5",
            "5x",
            "99999999999999999999",
        ] {
            bad("jetstreamkv.io/history", v, "from 1 to 64");
        }
    }

    #[test]
    fn ttl() {
        let cases = [
            ("90s", Some(90)),
            ("30m", Some(1800)),
            ("1h30m", Some(5400)),
            ("24h", Some(86_400)),
            ("168h", Some(604_800)),
            ("1.5h", Some(5400)),
            ("1h0m0s", Some(3600)),
            ("+10s", Some(10)),
            ("0", None),
            ("0s", None),
            ("0h0m", None),
        ];
        for (v, secs) in cases {
            assert_eq!(
                good("jetstreamkv.io/ttl", v).ttl,
                secs.map(Duration::from_secs),
                "{v}"
            );
        }
        assert_eq!(
            good("jetstreamkv.io/ttl", "100ms").ttl,
            Some(Duration::from_millis(100))
        );
        for v in [
            "", "10", "-5s", "1d", "1w", "5 s", "1h 30m", "s", ".s", "1.2.3s", "P1D", "99ms",
            "1us", "3000000h",
        ] {
            bad("jetstreamkv.io/ttl", v, "1h30m");
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            ("1", Some(1)),
            ("1024", Some(1024)),
            ("1Ki", Some(1024)),
            ("512Mi", Some(512 << 20)),
            ("2Gi", Some(2 << 30)),
            ("1Ti", Some(1 << 40)),
            ("1K", Some(1000)),
            ("1k", Some(1000)),
            ("5M", Some(5_000_000)),
            ("1G", Some(1_000_000_000)),
            ("2T", Some(2_000_000_000_000)),
            (" 10Mi ", Some(10 << 20)),
            ("-1", None),
        ];
        for (v, want) in cases {
            assert_eq!(good("jetstreamkv.io/max-bytes", v).max_bytes, want, "{v}");
        }
        for v in [
            "0",
            "-2",
            "",
            "Mi",
            "1.5Gi",
            "1 Gi",
            "1GB",
            "1gi",
            "1Pi",
            "10x",
            "+5",
            "-1Mi",
            "9999999Ti",
        ] {
            bad("jetstreamkv.io/max-bytes", v, "-1 for unlimited");
        }
    }

    #[test]
    fn max_value_size() {
        let cases = [
            ("1Mi", Some(1 << 20)),
            ("1024", Some(1024)),
            ("2147483647", Some(i32::MAX)),
            ("1G", Some(1_000_000_000)),
            ("-1", None),
        ];
        for (v, want) in cases {
            assert_eq!(
                good("jetstreamkv.io/max-value-size", v).max_value_size,
                want,
                "{v}"
            );
        }
        for v in ["0", "2Gi", "2147483648", "3G", "big", ""] {
            bad("jetstreamkv.io/max-value-size", v, "2147483647");
        }
    }

    #[test]
    fn storage() {
        for (v, want) in [
            ("file", Storage::File),
            ("memory", Storage::Memory),
            ("Memory", Storage::Memory),
        ] {
            assert_eq!(good("jetstreamkv.io/storage", v).storage, want, "{v}");
        }
        for v in ["disk", "mem", ""] {
            bad("jetstreamkv.io/storage", v, "\"file\" or \"memory\"");
        }
    }

    #[test]
    fn replicas() {
        for (v, want) in [("1", 1), ("3", 3), ("5", 5)] {
            assert_eq!(good("jetstreamkv.io/replicas", v).replicas, want, "{v}");
        }
        for v in ["0", "6", "-1", "three", ""] {
            bad("jetstreamkv.io/replicas", v, "from 1 to 5");
        }
    }

    #[test]
    fn compression() {
        for (v, want) in [
            ("true", true),
            ("TRUE", true),
            ("s2", true),
            ("S2", true),
            ("false", false),
        ] {
            assert_eq!(
                good("jetstreamkv.io/compression", v).compression,
                want,
                "{v}"
            );
        }
        for v in ["yes", "1", "none", "gzip", ""] {
            bad("jetstreamkv.io/compression", v, "\"s2\"");
        }
    }

    #[test]
    fn free_text_settings() {
        let s = good("jetstreamkv.io/description", "Orders of the shop ");
        assert_eq!(s.description.as_deref(), Some("Orders of the shop "));
        assert_eq!(good("jetstreamkv.io/description", "").description, None);

        let s = good("jetstreamkv.io/placement-cluster", " east ");
        assert_eq!(s.placement_cluster.as_deref(), Some("east"));
        assert_eq!(
            good("jetstreamkv.io/placement-cluster", "").placement_cluster,
            None
        );

        let s = good("jetstreamkv.io/placement-tags", "ssd, az:1 ,,region-eu");
        assert_eq!(s.placement_tags, ["ssd", "az:1", "region-eu"]);
        assert!(
            good("jetstreamkv.io/placement-tags", " ")
                .placement_tags
                .is_empty()
        );
    }

    #[test]
    fn limit_marker_ttl() {
        for (v, want) in [
            ("30s", Some(30)),
            ("1s", Some(1)),
            ("2h", Some(7200)),
            ("0", None),
        ] {
            assert_eq!(
                good("jetstreamkv.io/limit-marker-ttl", v).limit_marker_ttl,
                want.map(Duration::from_secs),
                "{v}"
            );
        }
        for v in ["999ms", "100ms", "-1s", "soon", "", "1d"] {
            bad("jetstreamkv.io/limit-marker-ttl", v, "at least 1s");
        }
    }

    #[test]
    fn metadata_is_a_json_object_of_text() {
        let s = good(
            "jetstreamkv.io/metadata",
            r#" {"team": "shop", "cost-center": "42", "note": ""} "#,
        );
        assert_eq!(
            s.metadata,
            BTreeMap::from([
                ("cost-center".to_owned(), "42".to_owned()),
                ("note".to_owned(), String::new()),
                ("team".to_owned(), "shop".to_owned()),
            ])
        );
        assert!(good("jetstreamkv.io/metadata", "").metadata.is_empty());
        assert!(good("jetstreamkv.io/metadata", "{}").metadata.is_empty());
        for (v, why) in [
            ("team=shop", "not a JSON object"),
            (r#"["team"]"#, "not a JSON object"),
            (r#"{"tier": 1}"#, "quote it"),
            (r#"{"a": {"b": "c"}}"#, "quote it"),
            (r#"{"team": "a", "team": "b"}"#, "given twice"),
            (r#"{"": "x"}"#, "1 to 256 bytes"),
            (r#"{"a\u0007": "x"}"#, "no control characters"),
            ("{\"a\u{7}\": \"x\"}", "control character"),
        ] {
            bad("jetstreamkv.io/metadata", v, why);
        }
    }

    #[test]
    fn metadata_is_bounded_before_and_after_parsing() {
        let items: Vec<String> = (0..=MAX_METADATA_ITEMS)
            .map(|i| format!("\"k{i}\": \"v\""))
            .collect();
        bad(
            "jetstreamkv.io/metadata",
            &format!("{{{}}}", items.join(",")),
            "it has 33 items",
        );
        let big = format!("{{\"k\": \"{}\"}}", "x".repeat(MAX_METADATA_TEXT));
        bad("jetstreamkv.io/metadata", &big, "more than 16384");
        let long_value = format!("{{\"k\": \"{}\"}}", "x".repeat(MAX_METADATA_VALUE + 1));
        bad(
            "jetstreamkv.io/metadata",
            &long_value,
            "longer than 1024 bytes",
        );
        let long_key = format!("{{\"{}\": \"v\"}}", "k".repeat(MAX_METADATA_KEY + 1));
        bad("jetstreamkv.io/metadata", &long_key, "1 to 256 bytes");
        // Deep nesting is refused by the parser, within the text bound.
        let deep = format!("{{\"k\": {}{}}}", "[".repeat(5000), "]".repeat(5000));
        bad("jetstreamkv.io/metadata", &deep, "not a JSON object");
    }

    #[test]
    fn metadata_never_sets_the_owner_marks_nor_the_servers_keys() {
        for key in [
            "jetstreamkv.io/managed-by",
            "jetstreamkv.io/component",
            "JetStreamKV.io/component",
            "jetstreamkv.io/anything",
            "_nats.ver",
            "_NATS.req.level",
        ] {
            let e =
                read("jetstreamkv.io/metadata", &format!("{{\"{key}\": \"x\"}}")).expect_err(key);
            assert_eq!(e.reason(), "ReservedMetadataKey", "{key}");
            assert!(e.is_permanent());
            let msg = e.to_string();
            assert!(
                msg.contains(key) && msg.contains("use another key"),
                "{msg}"
            );
        }
        assert!(is_reserved_metadata_key("jetstreamkv.io/managed-by"));
        assert!(!is_reserved_metadata_key("jetstreamkv.io"));
        assert!(!is_reserved_metadata_key("team"));
        assert!(!is_reserved_metadata_key("é"));
    }

    #[test]
    fn republish() {
        let s = from_annotations(&annotations(&[
            ("jetstreamkv.io/republish-destination", "changes.orders.>"),
            ("jetstreamkv.io/republish-source", "$KV.orders.>"),
            ("jetstreamkv.io/republish-headers-only", "TRUE"),
        ]))
        .unwrap();
        assert_eq!(s.republish_destination.as_deref(), Some("changes.orders.>"));
        assert_eq!(s.republish_source.as_deref(), Some("$KV.orders.>"));
        assert!(s.republish_headers_only);
        assert_eq!(
            good("jetstreamkv.io/republish-destination", "").republish_destination,
            None
        );
        for v in ["a..b", "a b", ">.a", "a.b*", ".a", "a."] {
            bad("jetstreamkv.io/republish-destination", v, "a NATS subject");
            bad("jetstreamkv.io/republish-source", v, "a NATS subject");
        }
        bad("jetstreamkv.io/republish-headers-only", "yes", "\"true\"");
        // A source or headers-only without a destination republishes nothing: said, not ignored.
        for (key, value) in [
            ("jetstreamkv.io/republish-source", "$KV.orders.>"),
            ("jetstreamkv.io/republish-headers-only", "true"),
        ] {
            bad(key, value, "jetstreamkv.io/republish-destination");
        }
        assert!(
            good("jetstreamkv.io/republish-headers-only", "false")
                .republish_destination
                .is_none()
        );
    }

    #[test]
    fn policies_are_not_bucket_settings() {
        let cases = [
            ("jetstreamkv.io/on-existing", "adopt"),
            ("jetstreamkv.io/on-existing", "verify"),
            ("jetstreamkv.io/deletion-policy", "delete"),
            ("jetstreamkv.io/deletion-policy", "Retain"),
            ("jetstreamkv.io/allow-data-loss", "true"),
            ("jetstreamkv.io/allow-data-loss", "False"),
        ];
        for (key, value) in cases {
            assert!(good(key, value).explicit.is_empty(), "{key}");
        }
        assert_eq!(
            good("jetstreamkv.io/on-existing", "adopt").on_existing,
            OnExisting::Adopt
        );
        assert_eq!(
            good("jetstreamkv.io/deletion-policy", "delete").deletion_policy,
            DeletionPolicy::Delete
        );
        assert!(good("jetstreamkv.io/allow-data-loss", "true").allow_data_loss);
        bad("jetstreamkv.io/on-existing", "overwrite", "\"adopt\"");
        bad("jetstreamkv.io/deletion-policy", "orphan", "\"retain\"");
        bad(
            "jetstreamkv.io/allow-data-loss",
            "yes",
            "\"true\" or \"false\"",
        );
    }

    #[test]
    fn explicit_records_every_setting_given_even_at_its_default() {
        let all: Vec<(&str, &str)> = vec![
            ("jetstreamkv.io/history", "1"),
            ("jetstreamkv.io/ttl", "0"),
            ("jetstreamkv.io/max-bytes", "-1"),
            ("jetstreamkv.io/max-value-size", "-1"),
            ("jetstreamkv.io/storage", "file"),
            ("jetstreamkv.io/replicas", "1"),
            ("jetstreamkv.io/compression", "false"),
            ("jetstreamkv.io/description", ""),
            ("jetstreamkv.io/placement-cluster", ""),
            ("jetstreamkv.io/placement-tags", ""),
            ("jetstreamkv.io/limit-marker-ttl", "0"),
            ("jetstreamkv.io/metadata", ""),
            ("jetstreamkv.io/republish-source", ""),
            ("jetstreamkv.io/republish-destination", ""),
            ("jetstreamkv.io/republish-headers-only", "false"),
            ("jetstreamkv.io/on-existing", "verify"),
        ];
        let s = from_annotations(&annotations(&all)).unwrap();
        assert_eq!(s.explicit, Setting::ALL.into_iter().collect());
        let mut without_explicit = s.clone();
        without_explicit.explicit.clear();
        assert_eq!(without_explicit, BucketSettings::default());
    }

    #[test]
    fn a_full_set_is_read_together() {
        let s = from_annotations(&annotations(&[
            ("jetstreamkv.io/history", "10"),
            ("jetstreamkv.io/ttl", "1h30m"),
            ("jetstreamkv.io/storage", "memory"),
            ("jetstreamkv.io/replicas", "3"),
            ("jetstreamkv.io/deletion-policy", "delete"),
            ("dapr.io/app-id", "shop"),
        ]))
        .unwrap();
        assert_eq!(s.history, 10);
        assert_eq!(s.ttl, Some(Duration::from_secs(5400)));
        assert_eq!(s.storage, Storage::Memory);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.deletion_policy, DeletionPolicy::Delete);
        assert_eq!(
            s.explicit,
            [
                Setting::History,
                Setting::Ttl,
                Setting::Storage,
                Setting::Replicas
            ]
            .into()
        );
    }

    #[test]
    fn one_bad_annotation_fails_the_whole_set() {
        let r = from_annotations(&annotations(&[
            ("jetstreamkv.io/history", "5"),
            ("jetstreamkv.io/replicas", "9"),
        ]));
        assert_eq!(r.unwrap_err().reason(), "InvalidAnnotation");
    }

    #[test]
    fn unknown_annotations_are_typos() {
        let cases = [
            ("jetstreamkv.io/histroy", Some("jetstreamkv.io/history")),
            ("jetstreamkv.io/max_bytes", Some("jetstreamkv.io/max-bytes")),
            ("jetstreamkv.io/TTL", Some("jetstreamkv.io/ttl")),
            (
                "jetstreamkv.io/deletionPolicy",
                Some("jetstreamkv.io/deletion-policy"),
            ),
            ("jetstreamkv.io/ttls", Some("jetstreamkv.io/ttl")),
            ("jetstreamkv.io/tag", None),
            ("jetstreamkv.io/something-else", None),
            ("jetstreamkv.io/", None),
        ];
        for (key, hint) in cases {
            let e = read(key, "1").unwrap_err();
            assert_eq!(e.reason(), "UnknownAnnotation", "{key}");
            let msg = e.to_string();
            assert!(msg.contains(key), "{msg}");
            for s in Setting::ALL {
                assert!(msg.contains(s.annotation()), "{msg}");
            }
            for p in POLICY_ANNOTATIONS {
                assert!(msg.contains(p), "{msg}");
            }
            match hint {
                Some(h) => assert!(msg.contains(&format!("did you mean {h}?")), "{msg}"),
                None => assert!(!msg.contains("did you mean"), "{msg}"),
            }
        }
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(1000);
        let msg = read("jetstreamkv.io/history", &long)
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 400, "{msg}");
        assert!(msg.contains("..."), "{msg}");
    }

    #[test]
    fn enums_serialize_lowercase() {
        let v = serde_json::to_value((Storage::Memory, OnExisting::Adopt, DeletionPolicy::Delete))
            .unwrap();
        assert_eq!(v, serde_json::json!(["memory", "adopt", "delete"]));
        for s in [Storage::File, Storage::Memory] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for o in [OnExisting::Verify, OnExisting::Adopt] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        for d in [DeletionPolicy::Retain, DeletionPolicy::Delete] {
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
        }
        assert_eq!(
            serde_json::to_value(Setting::MaxValueSize).unwrap(),
            "maxValueSize"
        );
        let back: Storage = serde_json::from_str("\"file\"").unwrap();
        assert_eq!(back, Storage::File);
        // schemars writes documented unit variants as `oneOf` consts (kube's CRD generation
        // hoists them into an `enum`); either way the values are the lowercase names.
        let schema = serde_json::to_value(schemars::schema_for!(Storage)).unwrap();
        let values: Vec<_> = schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["const"].clone())
            .collect();
        assert_eq!(
            values,
            [serde_json::json!("file"), serde_json::json!("memory")]
        );
    }

    #[test]
    fn every_setting_has_a_distinct_annotation() {
        let keys: BTreeSet<_> = Setting::ALL.iter().map(|s| s.annotation()).collect();
        assert_eq!(keys.len(), Setting::ALL.len());
        for s in Setting::ALL {
            assert!(s.annotation().starts_with(ANNOTATION_PREFIX));
            assert_eq!(Setting::from_annotation(s.annotation()), Some(s));
        }
    }
}
