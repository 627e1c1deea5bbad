//! Bad input at volume: random and adversarial Component metadata, annotations, JWTs and seeds
//! fed to the pure parsers and validators. None may panic; every error has a CamelCase reason and
//! a message that says something, and no message repeats a secret input (a JWT, a seed, a
//! password in a URL).

use std::sync::OnceLock;

use jetstream_kv_operator::credentials::{self, jwt};
use jetstream_kv_operator::dapr::{self, Component, ValueSource};
use jetstream_kv_operator::failure::Failure as _;
use jetstream_kv_operator::secret_value::SecretValue;
use jetstream_kv_operator::settings;
use nkeys::KeyPair;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};

use crate::support::needles::Needles;

/// Marks every secret the generators make, so a leak is a substring search. Nothing that is not
/// secret ever contains it.
const SECRET_MARK: &str = "Zq7SECRET";

fn is_camel_case(reason: &str) -> bool {
    !reason.is_empty()
        && reason.starts_with(|c: char| c.is_ascii_uppercase())
        && reason.chars().all(|c| c.is_ascii_alphanumeric())
}

fn assert_good_error(reason: &str, message: &str, debug: &str) -> Result<(), TestCaseError> {
    prop_assert!(is_camel_case(reason), "reason {reason:?} is not CamelCase");
    prop_assert!(message.len() > 10, "message {message:?} says nothing");
    prop_assert!(
        !message.contains(SECRET_MARK) && !debug.contains(SECRET_MARK),
        "a secret leaked: {message} / {debug}"
    );
    Ok(())
}

/// Text that parsers trip over: unicode, control characters, separators, templates, huge runs.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{0,40}",
        2 => "[a-zA-Z0-9_.:/@,{}% -]{0,40}",
        1 => Just(String::new()),
        1 => prop::sample::select(vec![
            "{uuid}", "{podName}", "{appID}", "{namespace}", "{", "}", "{{podName}}",
            "nats://", "://", "@", ":@", "nats://@", "nats://:@h", "tls://[::1", "[::1]:4222",
            "nats://h:99999", "nats://h:-1", "\u{0}", "\r\n", "\u{202e}", "🦀", "ﷺ", "a\u{301}",
        ]).prop_map(str::to_string),
        1 => (1usize..200_000).prop_map(|n| "x".repeat(n)),
        1 => (1usize..5_000).prop_map(|n| "é,".repeat(n)),
    ]
}

/// A secret value: anything, but always carrying the mark.
fn secret() -> impl Strategy<Value = String> {
    (nasty_text(), nasty_text()).prop_map(|(a, b)| format!("{a}{SECRET_MARK}{b}"))
}

/// natsURL values, some with a password (the secret) in them.
fn nats_url() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        Just("nats".to_string()),
        Just("127.0.0.1:4222".to_string()),
        Just("[::1]:4222".to_string()),
        "[a-z0-9.-]{0,20}(:[0-9]{0,6})?",
        nasty_text(),
    ];
    let scheme = prop::sample::select(vec![
        "", "nats://", "tls://", "ws://", "wss://", "http://", "NATS://", "nats:/",
    ]);
    let userinfo = prop_oneof![
        2 => Just(String::new()),
        1 => "[a-z]{1,8}".prop_map(|u| format!("{u}@")),
        // A password may hold commas, which split it across entries (as the Go client Dapr
        // uses splits natsURL): no piece of it may be shown (see store::check_servers).
        2 => ("[a-z]{0,8}", secret()).prop_map(|(u, p)| format!("{u}:{p}@")),
        // The head of a password cut by a comma is hidden.
        1 => ("[a-z]{0,8}", secret().prop_map(|p| p.replace(',', ";")))
            .prop_map(|(u, p)| format!("{u}:{p},x@")),
    ];
    let one = (scheme, userinfo, host).prop_map(|(s, u, h)| format!("{s}{u}{h}"));
    prop::collection::vec(one, 0..4).prop_map(|v| v.join(","))
}

fn item_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "natsURL", "natsurl", "NATSURL", "bucket", "Bucket", "jwt", "JWT", "seedKey", "seedkey",
            "name", "other", "", " natsURL", "bucket ",
        ]).prop_map(str::to_string),
        1 => nasty_text(),
    ]
}

fn value_for(name: &str) -> BoxedStrategy<Value> {
    let lower = name.to_ascii_lowercase();
    let plain = prop_oneof![
        4 => nasty_text().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => nasty_text().prop_map(|s| json!({"nested": [s, 1, null]})),
    ];
    match lower.as_str() {
        "jwt" | "seedkey" => secret().prop_map(Value::from).boxed(),
        "natsurl" => prop_oneof![3 => nats_url().prop_map(Value::from), 1 => plain].boxed(),
        "bucket" => prop_oneof![
            2 => "[a-zA-Z0-9_-]{1,30}".prop_map(Value::from),
            1 => plain,
        ]
        .boxed(),
        _ => plain.boxed(),
    }
}

/// One `spec.metadata` item as a user might write it (or get wrong).
fn metadata_item() -> impl Strategy<Value = Value> {
    item_name().prop_flat_map(|name| {
        let value = prop::option::of(value_for(&name));
        let secret_ref = prop::option::of((nasty_text(), prop::option::of(nasty_text())));
        let env_ref = prop::option::weighted(0.1, nasty_text());
        (Just(name), value, secret_ref, env_ref).prop_map(|(name, value, secret_ref, env_ref)| {
            let mut item = json!({"name": name});
            if let Some(v) = value {
                item["value"] = v;
            }
            if let Some((n, k)) = secret_ref {
                item["secretKeyRef"] = json!({"name": n, "key": k});
            }
            if let Some(e) = env_ref {
                item["envRef"] = Value::from(e);
            }
            item
        })
    })
}

fn component() -> impl Strategy<Value = Component> {
    let version = prop_oneof![
        4 => prop::sample::select(vec!["v1", "v0", "", "V1", "v2", " v1"]).prop_map(str::to_string),
        1 => nasty_text(),
    ];
    let store = prop::option::of(prop_oneof![
        Just("kubernetes".to_string()),
        Just(String::new()),
        nasty_text()
    ]);
    (version, prop::collection::vec(metadata_item(), 0..8), store).prop_map(
        |(version, metadata, store)| {
            let mut c = json!({
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Component",
                "metadata": {"name": "fuzz", "namespace": "ns"},
                "spec": {"type": "state.jetstream", "version": version, "metadata": metadata},
            });
            if let Some(s) = store {
                c["auth"] = json!({"secretStore": s});
            }
            serde_json::from_value(c).expect("every generated manifest is a Component")
        },
    )
}

proptest! {
    // XorShift: proptest's default ChaCha generator, unoptimised in a debug build, was most of
    // these properties' time (perf: chacha20's rounds, 50-60%).
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        .. ProptestConfig::default()
    })]

    /// Dapr's metadata rules, then the store's checks on the values (Secrets resolved to random
    /// secret values): never a panic, always a reason, never a secret in a message.
    #[test]
    fn metadata_and_store_config_never_panic_or_leak(
        c in component(),
        secret_urls in prop::collection::vec(nats_url(), 8),
        secret_credentials in prop::collection::vec(secret(), 8),
        secret_plain in prop::collection::vec(nasty_text(), 8),
    ) {
        match dapr::parse_metadata(&c) {
            Err(e) => assert_good_error(e.reason(), &e.to_string(), &format!("{e:?}"))?,
            Ok(entries) => {
                // What a Secret holds depends on the item: a natsURL may carry a password (and
                // is shown redacted), a jwt or seedKey is secret as a whole, the rest is not.
                let values: Vec<(String, SecretValue)> = entries
                    .iter()
                    .enumerate()
                    .map(|(i, entry)| {
                        let value = match &entry.source {
                            ValueSource::Inline(v) => v.clone(),
                            ValueSource::Secret { .. } => SecretValue::new(
                                match entry.name.to_ascii_lowercase().as_str() {
                                    "natsurl" => &secret_urls[i % 8],
                                    "jwt" | "seedkey" => &secret_credentials[i % 8],
                                    _ => &secret_plain[i % 8],
                                }
                                .clone(),
                            ),
                        };
                        (entry.name.clone(), value)
                    })
                    .collect();
                match dapr::store_config(&values) {
                    Err(e) => assert_good_error(e.reason(), &e.to_string(), &format!("{e:?}"))?,
                    Ok(config) => {
                        for server in &config.redacted_servers {
                            prop_assert!(!server.contains(SECRET_MARK), "unredacted: {server}");
                        }
                        let shown = format!("{config:?}");
                        prop_assert!(!shown.contains(SECRET_MARK));
                        prop_assert!(!config.bucket.is_empty());
                    }
                }
            }
        }
    }

    /// Bucket settings from annotations: never a panic; errors bounded in size even for huge values.
    #[test]
    fn annotations_never_panic_and_errors_are_bounded(
        annotations in prop::collection::btree_map(annotation_key(), annotation_value(), 0..12)
    ) {
        match settings::from_annotations(&annotations) {
            Ok(s) => {
                prop_assert!((1..=64).contains(&s.history), "history {}", s.history);
                prop_assert!((1..=5).contains(&s.replicas), "replicas {}", s.replicas);
                prop_assert!(s.limit_marker_ttl.is_none_or(|d| d >= std::time::Duration::from_secs(1)));
                prop_assert!(s.metadata.len() <= settings::MAX_METADATA_ITEMS);
                prop_assert!(!s.metadata.keys().any(|k| settings::is_reserved_metadata_key(k)));
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(is_camel_case(e.reason()), "reason {:?}", e.reason());
                prop_assert!(message.len() > 10);
                let longest_key = annotations.keys().map(String::len).max().unwrap_or(0);
                prop_assert!(
                    message.len() < 2_000 + longest_key,
                    "a {}-byte message", message.len()
                );
            }
        }
    }

    /// User credentials: random, JWT-shaped, tampered and wrong-kind JWTs and seeds, at any time.
    #[test]
    fn credentials_never_panic_or_leak(
        token in jwt_input(),
        seed in seed_input(),
        now in prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0i64), any::<i64>(), 1_600_000_000i64..2_000_000_000],
    ) {
        let result = credentials::check_user_credentials(
            &SecretValue::new(token.clone()),
            &SecretValue::new(seed.clone()),
            now,
        );
        if let Err(e) = result {
            let message = e.to_string();
            let debug = format!("{e:?}");
            prop_assert!(is_camel_case(e.reason()), "reason {:?}", e.reason());
            prop_assert!(message.len() > 10);
            // No 16-character run of the key material (base64url or base32 text) appears in
            // what is shown; the armor of a .creds file is not secret.
            let runs = [&token, &seed].into_iter().flat_map(|input| {
                input.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            });
            let needles = Needles::pieces_of(runs);
            for shown in [&message, &debug] {
                let found = needles.find(shown);
                prop_assert!(found.is_empty(), "{:?} leaks its input: {found:?}", e.reason());
            }
        }
    }
}

fn annotation_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "history", "ttl", "max-bytes", "max-value-size", "storage", "replicas", "compression",
            "description", "placement-cluster", "placement-tags", "on-existing", "deletion-policy",
            "allow-data-loss", "histroy", "TTL", "ready", "reason", "observed-generation", "",
            "limit-marker-ttl", "metadata", "republish-source", "republish-destination",
            "republish-headers-only",
        ]).prop_map(|k| format!("jetstreamkv.io/{k}")),
        1 => "[a-z./-]{0,30}",
        1 => "\\PC{0,300}".prop_map(|k| format!("jetstreamkv.io/{k}")),
    ]
}

fn annotation_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "1", "0", "-1", "64", "65", "5", "99999999999999999999999", "1.5", "1e3", "0x10",
            "90s", "1h30m", "0", "-5m", "1000000000h", "9223372036854775807ns", "1.5h", "24h",
            "1Mi", "1Gi", "8Ei", "16Ei", "1Qi", "-1Mi", "1K", "18446744073709551616", "file",
            "memory", "FILE", "true", "false", "TRUE", "yes", "verify", "adopt", "retain",
            "delete", "a,b,,c", " 3 ", "\t", "🦀", r#"{"team": "shop"}"#, "{}",
            r#"{"jetstreamkv.io/component": "x/y"}"#, r#"{"a": 1}"#, r#"{"a": "b", "a": "c"}"#,
            "$KV.b.>", "changes.>", "a.*.b", "a..b", ">",
        ]).prop_map(str::to_string),
        1 => prop::collection::btree_map("\\PC{0,20}", "\\PC{0,40}", 0..40)
            .prop_map(|m| serde_json::to_string(&m).unwrap_or_default()),
        2 => "[0-9]{1,40}[a-zA-Z]{0,3}",
        2 => "([0-9]{1,12}(ns|us|µs|ms|s|m|h|d|y)){1,5}",
        1 => nasty_text(),
    ]
}

/// Key pairs made once: generating them per case would make failures irreproducible.
struct Keys {
    operator: KeyPair,
    account: KeyPair,
    user: KeyPair,
    other_user: KeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        operator: KeyPair::new_operator(),
        account: KeyPair::new_account(),
        user: KeyPair::new_user(),
        other_user: KeyPair::new_user(),
    })
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jwt_input() -> impl Strategy<Value = String> {
    let k = keys();
    let valid_user = jwt::user_jwt(&k.account, &k.user.public_key(), "fuzz", None).expect("mint");
    let expiring = |exp: i64| {
        jwt::user_jwt(&k.account, &k.user.public_key(), "fuzz", Some(exp)).expect("mint")
    };
    let account = jwt::account_jwt(&k.operator, &k.account.public_key(), "A", true).expect("mint");
    let operator = jwt::operator_jwt(&k.operator, "O").expect("mint");
    let user_by_user = {
        let claims = jwt::Claims::new("user", k.user.public_key(), "self-signed");
        jwt::encode(&claims, &k.other_user).expect("mint")
    };
    let tokens = vec![
        valid_user.clone(),
        expiring(1),
        expiring(i64::MAX),
        expiring(i64::MIN),
        account,
        operator,
        user_by_user,
    ];
    prop_oneof![
        // Real tokens, some tampered with at a random place.
        3 => (prop::sample::select(tokens), any::<prop::sample::Index>(), any::<char>(), any::<bool>())
            .prop_map(|(t, at, c, tamper)| {
                if !tamper {
                    return t;
                }
                let mut chars: Vec<char> = t.chars().collect();
                let i = at.index(chars.len());
                chars[i] = c;
                chars.into_iter().collect()
            }),
        // JWT-shaped: base64url segments of random JSON or bytes.
        2 => (json_text(), json_text(), prop::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(h, c, sig)| format!("{}.{}.{}", b64(h.as_bytes()), b64(c.as_bytes()), b64(&sig))),
        1 => (prop::collection::vec(any::<u8>(), 0..300), 0usize..6).prop_map(|(b, dots)| {
            let mut s = b64(&b);
            for i in 0..dots.min(s.len()) {
                s.insert(i * 7 % (s.len() + 1), '.');
            }
            s
        }),
        // A .creds file, whitespace and line breaks around a real token, and plain garbage.
        1 => Just(format!("-----BEGIN NATS USER JWT-----\n{valid_user}\n------END NATS USER JWT------\n")),
        1 => Just(format!("  {valid_user}\r\n")),
        2 => nasty_text(),
    ]
}

fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#.to_string()),
        Just(r#"{"typ":"JWT","alg":"none"}"#.to_string()),
        (nasty_text(), any::<i64>(), any::<i64>()).prop_map(|(s, exp, nbf)| {
            json!({"sub": s, "iss": "A", "exp": exp, "nbf": nbf, "nats": {"type": "user", "version": 2}}).to_string()
        }),
        (nasty_text(), nasty_text()).prop_map(|(a, b)| json!({a: b, "nats": b}).to_string()),
        nasty_text(),
    ]
}

fn seed_input() -> impl Strategy<Value = String> {
    let k = keys();
    let seeds = vec![
        k.user.seed().expect("seed"),
        k.other_user.seed().expect("seed"),
        k.account.seed().expect("seed"),
        k.operator.seed().expect("seed"),
        KeyPair::new_server().seed().expect("seed"),
        KeyPair::new_cluster().seed().expect("seed"),
        k.user.public_key(),
    ];
    prop_oneof![
        3 => (prop::sample::select(seeds), any::<prop::sample::Index>(), "[A-Z2-7a-z0-9=\n -]", any::<bool>())
            .prop_map(|(s, at, c, tamper)| {
                if !tamper {
                    return s;
                }
                let mut chars: Vec<char> = s.chars().collect();
                let i = at.index(chars.len());
                chars[i] = c.chars().next().unwrap_or('A');
                chars.into_iter().collect()
            }),
        1 => "S[A-Z2-7]{0,80}",
        1 => "SU[A-Z2-7]{56}",
        1 => Just("-----BEGIN USER NKEY SEED-----\nSUAXXX\n------END USER NKEY SEED------".to_string()),
        2 => nasty_text(),
    ]
}

#[test]
fn generated_secrets_carry_the_mark() {
    // Guards the leak checks above: they would pass vacuously if the mark were never generated.
    let mut runner = proptest::test_runner::TestRunner::default();
    let s = secret().new_tree(&mut runner).expect("a value").current();
    assert!(s.contains(SECRET_MARK));
}
