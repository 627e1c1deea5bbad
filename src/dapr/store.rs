//! The `state.jetstream` store's configuration from resolved metadata values, checked the way
//! the store (and the NATS client it uses) would check it when `daprd` starts.

use url::Url;

use super::ComponentError;
use crate::secret_value::SecretValue;

/// Dapr's per-pod templates: each sidecar replaces them with its own values.
pub const POD_TEMPLATES: [&str; 4] = ["{uuid}", "{podName}", "{appID}", "{namespace}"];

/// URL schemes the NATS client accepts.
const NATS_SCHEMES: [&str; 4] = ["nats", "tls", "ws", "wss"];

/// The most servers one `natsURL` may list: each is tried within one connect deadline, and a
/// list of silent servers must not hold a worker for long.
pub const MAX_SERVERS: usize = 8;

/// What replaces a password or token in a displayed URL.
const REDACTED: &str = "***";

/// What the operator needs to reach the store's bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// `natsURL` as given: one or more comma-separated URLs, which may hold `user:pass@`.
    pub servers: SecretValue,
    /// Each server URL without its password or token, for status, events and logs; only
    /// `<Secret name, key>` when `natsURL` came from a Secret.
    pub redacted_servers: Vec<String>,
    /// The KV bucket name.
    pub bucket: String,
    /// The bucket name as it may be shown: `<Secret name, key>` when it came from a Secret.
    pub shown_bucket: String,
    /// How the store authenticates.
    pub auth: NatsAuth,
    /// The NATS client connection name (`name`), when set to a fixed value.
    pub connection_name: Option<String>,
}

/// How the store authenticates to NATS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatsAuth {
    /// Anonymous.
    None,
    /// User and password (or a token) in the server URLs.
    UserInfo,
    /// A token given apart from the URLs (`pubsub.jetstream`'s `token` item).
    Token(SecretValue),
    /// A user JWT, with the nkey seed that signs the server's nonce.
    Jwt {
        /// The user JWT.
        jwt: SecretValue,
        /// The user's nkey seed.
        seed: SecretValue,
    },
}

impl NatsAuth {
    /// A name for status and metrics: `none`, `userinfo`, `token` or `jwt`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::UserInfo => "userinfo",
            Self::Token(_) => "token",
            Self::Jwt { .. } => "jwt",
        }
    }
}

impl StoreConfig {
    /// The server URLs one by one, split and trimmed the way the Go NATS client that Dapr uses
    /// splits `natsURL`, ready for the Rust client (which takes one URL per address).
    pub fn server_urls(&self) -> Vec<SecretValue> {
        split_servers(self.servers.expose())
            .map(SecretValue::new)
            .collect()
    }
}

/// Checks the resolved metadata values of a `state.jetstream` Component and builds its
/// configuration. Names match case-insensitively; the first item of a name counts; unknown
/// names are ignored, as Dapr ignores them.
///
/// Order of checks: per-pod templates, `natsURL`, `bucket`, then the `jwt`/`seedKey` pair.
pub fn store_config(values: &[(String, SecretValue)]) -> Result<StoreConfig, ComponentError> {
    store_config_with_origins(values, |_| None)
}

/// [`store_config`], where `origin` says for a metadata item (by its name as written) where its
/// value came from when that must be shown instead of the value: `<Secret name, key>` (see
/// [`shown_origin`]). A `natsURL` or `bucket` from a Secret is then never shown, in the config
/// nor in an error: what came from a Secret is as private as a password.
pub fn store_config_with_origins(
    values: &[(String, SecretValue)],
    origin: impl Fn(&str) -> Option<String>,
) -> Result<StoreConfig, ComponentError> {
    let get = |wanted: &str| item(values, wanted);

    for wanted in ["natsURL", "bucket", "jwt", "seedKey"] {
        if let Some((name, value)) = get(wanted)
            && let Some(template) = pod_template(value.expose())
        {
            return Err(ComponentError::UnresolvableTemplate {
                name: name.to_owned(),
                template: template.to_owned(),
            });
        }
    }

    let (servers, redacted_servers, has_userinfo) = servers_with_origin(values, &origin)?;

    let bucket = get("bucket").map(|(_, v)| v.expose()).unwrap_or_default();
    let shown_bucket = get("bucket")
        .and_then(|(name, _)| origin(name))
        .unwrap_or_else(|| bucket.to_owned());
    if bucket.is_empty() {
        return Err(ComponentError::MissingBucket);
    }
    if !is_valid_bucket_name(bucket) {
        return Err(ComponentError::InvalidBucketName {
            bucket: shown_bucket,
        });
    }

    let auth = user_auth(values, has_userinfo)?;

    // The connection name is cosmetic and `{podName}` there is common in Dapr manifests, so a
    // per-pod name is dropped rather than failing a Component that works in Dapr.
    let connection_name = get("name")
        .map(|(_, v)| v.expose())
        .filter(|v| !v.is_empty() && pod_template(v).is_none())
        .map(str::to_owned);

    Ok(StoreConfig {
        servers,
        redacted_servers,
        bucket: bucket.to_owned(),
        shown_bucket,
        auth,
        connection_name,
    })
}

/// A metadata item by name (case-insensitive, the first one counts), with its name as written.
pub(crate) fn item<'a>(
    values: &'a [(String, SecretValue)],
    wanted: &str,
) -> Option<(&'a str, &'a SecretValue)> {
    values
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
        .map(|(name, value)| (name.as_str(), value))
}

/// `natsURL`, checked: the value, each server as it may be shown (only `<Secret name, key>` when
/// `origin` says it came from a Secret), and whether a server URL holds user info. Shared by
/// every Component type the operator reads.
pub(crate) fn servers_with_origin(
    values: &[(String, SecretValue)],
    origin: &impl Fn(&str) -> Option<String>,
) -> Result<(SecretValue, Vec<String>, bool), ComponentError> {
    let get = |wanted: &str| item(values, wanted);
    let servers = get("natsURL").map(|(_, v)| v.clone()).unwrap_or_default();
    let servers_origin = get("natsURL").and_then(|(name, _)| origin(name));
    let redacted_servers = match (check_servers(servers.expose()), &servers_origin) {
        (Ok(_), Some(shown)) => vec![shown.clone()],
        (Ok(redacted), None) => redacted,
        (Err(ComponentError::InvalidNatsURL { problem, .. }), Some(shown)) => {
            return Err(ComponentError::InvalidNatsURL {
                url: shown.clone(),
                // "unsupported scheme \"x\"" would show a piece of it.
                problem: problem
                    .split_once(" \"")
                    .map_or(problem.clone(), |(head, _)| head.to_owned()),
            });
        }
        (Err(e), _) => return Err(e),
    };
    let has_userinfo =
        split_servers(servers.expose()).any(|s| parse_server(s).is_ok_and(|u| has_userinfo(&u)));
    Ok((servers, redacted_servers, has_userinfo))
}

/// The `jwt`/`seedKey` pair, else user info in the URLs, else anonymous.
pub(crate) fn user_auth(
    values: &[(String, SecretValue)],
    has_userinfo: bool,
) -> Result<NatsAuth, ComponentError> {
    let present = |wanted| {
        item(values, wanted)
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
    };
    Ok(match (present("jwt"), present("seedKey")) {
        (Some(jwt), Some(seed)) => NatsAuth::Jwt {
            jwt: jwt.clone(),
            seed: seed.clone(),
        },
        (Some(_), None) => return Err(ComponentError::JwtWithoutSeed),
        (None, Some(_)) => return Err(ComponentError::SeedWithoutJwt),
        (None, None) if has_userinfo => NatsAuth::UserInfo,
        (None, None) => NatsAuth::None,
    })
}

/// How a value from a Secret is shown: where it came from, never what it is.
pub fn shown_origin(secret: &str, key: &str) -> String {
    format!("<Secret {secret}, key {key}>")
}

/// A URL with its password (or token, when there is no password) replaced by `***`.
///
/// Works on text, not on a parsed URL, so that an unparseable URL is redacted too. Everything up
/// to the last `@` after the scheme counts as user info, so that a password holding an unescaped
/// `/`, `?` or `#` is still hidden.
pub fn redact_url(url: &str) -> String {
    // A `://` after something that cannot be a scheme (`u:pa55://w0rd@h`) is a piece of the
    // password, and what precedes it is user info, not a scheme to show.
    let (scheme, rest) = match url.find("://") {
        Some(i) if is_scheme(&url[..i]) => url.split_at(i + 3),
        _ => ("", url),
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:{REDACTED}{host}"),
        // A lone user name is a token in NATS: hide it all.
        None => format!("{scheme}{REDACTED}{host}"),
    }
}

/// A URL scheme as RFC 3986 writes it: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The first per-pod template in a value.
fn pod_template(value: &str) -> Option<&'static str> {
    POD_TEMPLATES.into_iter().find(|t| value.contains(t))
}

/// Splits `natsURL` like the Go NATS client: on commas, trimmed, empty entries skipped.
fn split_servers(servers: &str) -> impl Iterator<Item = &str> {
    servers.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Checks each server URL and returns them redacted.
fn check_servers(servers: &str) -> Result<Vec<String>, ComponentError> {
    // A password may hold a comma, which splits it across entries, and no parser can tell where
    // such a password ends. So with credentials and several entries, nothing of the user info is
    // shown (not even a user name, which may be a password's tail), and an entry without user
    // info, or one that does not parse, is named by its position only.
    let ambiguous = servers.contains('@') && servers.contains(',');
    let show = |i: usize, server: &str, url: &Url| {
        if !ambiguous {
            redact_url(server)
        } else if server.contains('@') {
            // Rebuilt from what was parsed: no user info, no path (where a password's '@'
            // could have pushed a piece of it).
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{REDACTED}@{}{port}",
                url.scheme(),
                url.host_str().unwrap_or_default()
            )
        } else {
            // Possibly a piece of a password cut by a comma.
            format!("#{} (not shown: natsURL holds credentials)", i + 1)
        }
    };
    let count = split_servers(servers).count();
    if count > MAX_SERVERS {
        return Err(ComponentError::TooMuchMetadata {
            what: format!("natsURL with {count} servers"),
            limit: format!("{MAX_SERVERS} servers"),
        });
    }
    let mut redacted = Vec::new();
    for (i, server) in split_servers(servers).enumerate() {
        let url = match parse_server(server) {
            Ok(url) => url,
            Err(problem) => {
                let url = if ambiguous {
                    format!("#{} (not shown: natsURL holds credentials)", i + 1)
                } else {
                    redact_url(server)
                };
                return Err(ComponentError::InvalidNatsURL { url, problem });
            }
        };
        redacted.push(show(i, server, &url));
    }
    if redacted.is_empty() {
        return Err(ComponentError::MissingNatsURL);
    }
    Ok(redacted)
}

/// Parses one server address as the NATS clients do: `nats://` is assumed without a scheme.
/// The problem text never holds the input.
fn parse_server(server: &str) -> Result<Url, String> {
    let url = if server.contains("://") {
        Url::parse(server)
    } else {
        Url::parse(&format!("nats://{server}"))
    }
    .map_err(|e| e.to_string())?;
    if !NATS_SCHEMES.contains(&url.scheme()) {
        return Err(format!("unsupported scheme {:?}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".to_owned());
    }
    Ok(url)
}

/// Credentials as the NATS clients send them: a user name (with a password) or a token. A
/// password without a user name (`nats://:x@host`) is sent by none of them, so the server sees
/// an anonymous connection: it is no credential (and `requireCredentials` refuses it).
fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty()
}

/// NATS bucket names: `^[a-zA-Z0-9_-]+$`.
fn is_valid_bucket_name(bucket: &str) -> bool {
    !bucket.is_empty()
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure as _;

    const PASSWORD: &str = "pa55w0rd";
    const TOKEN: &str = "t0ken-s3cret";
    const JWT: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.secretjwt";
    const SEED: &str = "SUAMZSECRETSEEDVALUE";

    fn values(pairs: &[(&str, &str)]) -> Vec<(String, SecretValue)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), SecretValue::new(*v)))
            .collect()
    }

    fn config(pairs: &[(&str, &str)]) -> Result<StoreConfig, ComponentError> {
        store_config(&values(pairs))
    }

    /// Asserts that neither Display nor Debug of an error leaks a secret used in these tests.
    fn assert_no_secret(e: &ComponentError) {
        for text in [e.to_string(), format!("{e:?}")] {
            for secret in [PASSWORD, TOKEN, JWT, SEED] {
                assert!(!text.contains(secret), "{secret} leaked in {text}");
            }
        }
    }

    fn err(pairs: &[(&str, &str)]) -> ComponentError {
        let e = config(pairs).unwrap_err();
        assert_no_secret(&e);
        e
    }

    #[test]
    fn minimal_config() {
        let c = config(&[("natsURL", "nats://nats:4222"), ("bucket", "orders")]).unwrap();
        assert_eq!(c.servers.expose(), "nats://nats:4222");
        assert_eq!(c.redacted_servers, ["nats://nats:4222"]);
        assert_eq!(c.bucket, "orders");
        assert_eq!(c.auth, NatsAuth::None);
        assert_eq!(c.auth.kind(), "none");
        assert_eq!(c.connection_name, None);
    }

    #[test]
    fn names_match_case_insensitively_and_unknown_names_are_ignored() {
        let c = config(&[
            ("NATSURL", "nats://nats:4222"),
            ("Bucket", "orders"),
            ("JWT", JWT),
            ("seedkey", SEED),
            ("NAME", "orders-store"),
            ("keyPrefix", "{appID}"),
            ("somethingElse", "x"),
        ])
        .unwrap();
        assert_eq!(c.bucket, "orders");
        assert_eq!(c.auth.kind(), "jwt");
        assert_eq!(c.connection_name.as_deref(), Some("orders-store"));
    }

    #[test]
    fn first_item_of_a_name_counts() {
        let c = config(&[
            ("natsURL", "nats://a"),
            ("bucket", "one"),
            ("BUCKET", "two"),
        ])
        .unwrap();
        assert_eq!(c.bucket, "one");
    }

    #[test]
    fn nats_url_is_required() {
        for pairs in [
            &[("bucket", "b")][..],
            &[("natsURL", ""), ("bucket", "b")],
            &[("natsURL", "  "), ("bucket", "b")],
            &[("natsURL", " , ,"), ("bucket", "b")],
        ] {
            assert_eq!(err(pairs), ComponentError::MissingNatsURL, "{pairs:?}");
        }
    }

    #[test]
    fn valid_nats_urls() {
        let cases: &[(&str, &[&str])] = &[
            ("nats://nats:4222", &["nats://nats:4222"]),
            ("nats://nats", &["nats://nats"]),
            (
                "tls://nats.example.com:4222",
                &["tls://nats.example.com:4222"],
            ),
            ("ws://nats:8080", &["ws://nats:8080"]),
            ("wss://nats.example.com/ws", &["wss://nats.example.com/ws"]),
            ("nats:4222", &["nats:4222"]),
            ("10.0.0.1:4222", &["10.0.0.1:4222"]),
            ("[::1]:4222", &["[::1]:4222"]),
            (
                "nats.nats.svc.cluster.local",
                &["nats.nats.svc.cluster.local"],
            ),
            (
                "nats://a:4222, nats://b:4222,nats://c:4222,",
                &["nats://a:4222", "nats://b:4222", "nats://c:4222"],
            ),
            (
                "nats://user:pa55w0rd@nats:4222",
                &["nats://user:***@nats:4222"],
            ),
            ("user:pa55w0rd@nats:4222", &["user:***@nats:4222"]),
            ("nats://t0ken-s3cret@nats:4222", &["nats://***@nats:4222"]),
            (
                // Several entries with credentials: a user name could be a password's tail.
                "nats://u:pa55w0rd@a:4222,tls://t0ken-s3cret@b",
                &["nats://***@a:4222", "tls://***@b"],
            ),
        ];
        for (url, redacted) in cases {
            let c = config(&[("natsURL", url), ("bucket", "b")])
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(c.servers.expose(), *url);
            assert_eq!(c.redacted_servers, *redacted, "{url}");
            for r in &c.redacted_servers {
                assert!(!r.contains(PASSWORD) && !r.contains(TOKEN), "{r}");
            }
        }
    }

    #[test]
    fn invalid_nats_urls_are_reported_redacted() {
        let cases = [
            ("http://nats:4222", "http://nats:4222", "scheme"),
            ("https://u:pa55w0rd@nats", "https://u:***@nats", "scheme"),
            ("nats://nats:notaport", "nats://nats:notaport", "port"),
            (
                "nats://u:pa55w0rd@nats:99999",
                "nats://u:***@nats:99999",
                "port",
            ),
            ("nats://", "nats://", "host"),
            ("nats://u:pa55w0rd@:4222", "nats://u:***@:4222", "host"),
            (
                "nats://a:4222,ftp://t0ken-s3cret@b",
                "#2 (not shown: natsURL holds credentials)",
                "scheme",
            ),
            ("nats://ho st:4222", "nats://ho st:4222", ""),
            // A comma in a password splits it: its head is not shown.
            (
                "nats://u:pa55,w0rd@nats",
                "#1 (not shown: natsURL holds credentials)",
                "port",
            ),
        ];
        for (url, shown, problem) in cases {
            let e = err(&[("natsURL", url), ("bucket", "b")]);
            match &e {
                ComponentError::InvalidNatsURL {
                    url: got,
                    problem: p,
                } => {
                    assert_eq!(got, shown, "{url}");
                    assert!(p.contains(problem), "{url}: {p}");
                }
                other => panic!("{url}: {other:?}"),
            }
            assert_eq!(e.reason(), "InvalidNatsURL");
            assert!(e.to_string().contains(shown), "{e}");
        }
    }

    #[test]
    fn redaction_hides_passwords_even_in_odd_urls() {
        let cases = [
            ("nats://host:4222", "nats://host:4222"),
            ("nats://user:pa55w0rd@host", "nats://user:***@host"),
            ("nats://t0ken-s3cret@host", "nats://***@host"),
            ("nats://user:@host", "nats://user:***@host"),
            // Unescaped delimiters inside the password.
            ("nats://user:pa/55w0rd@host", "nats://user:***@host"),
            // A password holding `://` (found by tests/properties.rs): not a scheme.
            ("u:pa55://w0rd@host", "u:***@host"),
            ("d:x¥y:pa55w0rdnats://@@[::1]:4222", "d:***@[::1]:4222"),
            (":pa55://w0rd@host", ":***@host"),
            ("nats://user:pa55?w0rd@host", "nats://user:***@host"),
            ("nats://user:p@55w0rd@host", "nats://user:***@host"),
            ("user:pa55w0rd@host:4222", "user:***@host:4222"),
            ("nats:/user:pa55w0rd@host", "nats:***@host"),
        ];
        for (url, want) in cases {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("55w0rd") && !got.contains(TOKEN), "{got}");
        }
    }

    #[test]
    fn bucket_is_required_and_checked() {
        let nats = ("natsURL", "nats://nats");
        assert_eq!(err(&[nats]), ComponentError::MissingBucket);
        assert_eq!(err(&[nats, ("bucket", "")]), ComponentError::MissingBucket);
        for good in ["orders", "ORDERS_2", "a-b_c-1", "0", "_", "-"] {
            assert_eq!(config(&[nats, ("bucket", good)]).unwrap().bucket, good);
        }
        for bad in [
            "a.b",
            "a b",
            " orders",
            "orders*",
            "a>b",
            "kv/orders",
            "ördnung",
            "a$b",
        ] {
            let e = err(&[nats, ("bucket", bad)]);
            assert_eq!(e, ComponentError::InvalidBucketName { bucket: bad.into() });
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(
                msg.contains("A-Z") && msg.contains("0-9") && msg.contains("'_'"),
                "{msg}"
            );
        }
    }

    #[test]
    fn jwt_and_seed_come_in_pairs() {
        let base = [("natsURL", "nats://nats"), ("bucket", "b")];
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Pairs, Result<&str, &str>)] = &[
            (&[("jwt", JWT), ("seedKey", SEED)], Ok("jwt")),
            (&[("jwt", JWT)], Err("JwtWithoutSeed")),
            (&[("jwt", JWT), ("seedKey", "")], Err("JwtWithoutSeed")),
            (&[("seedKey", SEED)], Err("SeedWithoutJwt")),
            (&[("jwt", ""), ("seedKey", SEED)], Err("SeedWithoutJwt")),
            (&[("jwt", ""), ("seedKey", "")], Ok("none")),
            (&[], Ok("none")),
        ];
        for (extra, want) in cases {
            let pairs: Vec<_> = base.iter().chain(extra.iter()).copied().collect();
            match (config(&pairs), want) {
                (Ok(c), Ok(kind)) => assert_eq!(c.auth.kind(), *kind, "{extra:?}"),
                (Err(e), Err(reason)) => {
                    assert_eq!(e.reason(), *reason, "{extra:?}");
                    assert_no_secret(&e);
                }
                (got, _) => panic!("{extra:?}: {got:?}"),
            }
        }
        let c = config(&[base[0], base[1], ("jwt", JWT), ("seedKey", SEED)]).unwrap();
        assert_eq!(
            c.auth,
            NatsAuth::Jwt {
                jwt: SecretValue::new(JWT),
                seed: SecretValue::new(SEED)
            }
        );
        assert!(!format!("{c:?}").contains(JWT) && !format!("{c:?}").contains(SEED));
    }

    #[test]
    fn auth_kind_follows_credentials() {
        let cases = [
            ("nats://nats", None, "none"),
            ("nats://u:pa55w0rd@nats", None, "userinfo"),
            ("nats://t0ken-s3cret@nats", None, "userinfo"),
            ("nats://a,nats://u:pa55w0rd@b", None, "userinfo"),
            // Issue 26, L1: a password without a user name is sent by no client (the pool
            // connects anonymously), so it is no credential either.
            ("nats://:pa55w0rd@nats", None, "none"),
            ("nats://u:pa55w0rd@nats", Some((JWT, SEED)), "jwt"),
        ];
        for (url, creds, kind) in cases {
            let mut pairs = vec![("natsURL", url), ("bucket", "b")];
            if let Some((jwt, seed)) = creds {
                pairs.extend([("jwt", jwt), ("seedKey", seed)]);
            }
            let c = config(&pairs).unwrap();
            assert_eq!(c.auth.kind(), kind, "{url}");
            assert!(!format!("{c:?}").contains(PASSWORD), "{c:?}");
        }
    }

    #[test]
    fn pod_templates_cannot_be_resolved() {
        let base = [("natsURL", "nats://nats"), ("bucket", "b")];
        let cases = [
            ("natsURL", "nats://{podName}.nats:4222", "{podName}"),
            ("NatsUrl", "nats://nats-{namespace}:4222", "{namespace}"),
            ("bucket", "state-{appID}", "{appID}"),
            ("bucket", "{uuid}", "{uuid}"),
            ("jwt", "{uuid}", "{uuid}"),
            ("seedKey", "prefix{namespace}", "{namespace}"),
        ];
        for (name, value, template) in cases {
            let mut pairs: Vec<_> = base
                .iter()
                .copied()
                .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
                .collect();
            pairs.push((name, value));
            let e = err(&pairs);
            assert_eq!(
                e,
                ComponentError::UnresolvableTemplate {
                    name: name.into(),
                    template: template.into()
                }
            );
            let msg = e.to_string();
            assert!(msg.contains(name) && msg.contains(template), "{msg}");
            assert!(msg.contains("fixed value"), "{msg}");
            assert!(!msg.contains(value) || value == template, "{msg}");
        }
    }

    #[test]
    fn templates_win_over_other_errors() {
        // Otherwise `{podName}` in a URL would read as an invalid URL, hiding the real cause.
        let e = err(&[("natsURL", "nats://{podName}:4222"), ("bucket", "a.b")]);
        assert_eq!(e.reason(), "UnresolvableTemplate");
    }

    #[test]
    fn template_lookalikes_are_plain_values() {
        let c = config(&[
            ("natsURL", "nats://nats"),
            ("bucket", "b"),
            ("jwt", "{PODNAME}"),
            ("seedKey", "{podname}"),
        ])
        .unwrap();
        assert_eq!(c.auth.kind(), "jwt");
    }

    #[test]
    fn connection_name_is_kept_unless_per_pod() {
        let cases = [
            (None, None),
            (Some(""), None),
            (Some("orders"), Some("orders")),
            (Some("dapr-{podName}"), None),
            (Some("{appID}"), None),
        ];
        for (name, want) in cases {
            let mut pairs = vec![("natsURL", "nats://nats"), ("bucket", "b")];
            pairs.extend(name.map(|n| ("name", n)));
            let c = config(&pairs).unwrap();
            assert_eq!(c.connection_name.as_deref(), want, "{name:?}");
        }
    }

    #[test]
    fn server_urls_split_like_the_go_client() {
        let c = config(&[
            ("natsURL", " nats://u:pa55w0rd@a:4222 ,, b:4222 "),
            ("bucket", "b"),
        ])
        .unwrap();
        let urls: Vec<_> = c
            .server_urls()
            .iter()
            .map(|u| u.expose().to_owned())
            .collect();
        assert_eq!(urls, ["nats://u:pa55w0rd@a:4222", "b:4222"]);
    }
}
