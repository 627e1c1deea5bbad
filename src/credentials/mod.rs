//! NATS credentials checks, run before any connection.
//!
//! A Component that uses decentralized auth gives a user JWT (`jwt`) and the user's nkey seed
//! (`seedKey`). A wrong pair only shows up at connect time as a bare "authorization violation";
//! checking it here lets the operator say which part is wrong and what to do about it. The checks
//! are pure: no clock (the caller passes `now`), no I/O.
//!
//! Every message is safe to put in a status condition or an event: it never contains the JWT,
//! the seed, or any part of them. Public keys and claim values such as the user's name are not
//! secret and may appear.

pub mod jwt;
pub mod minted;
pub mod provisioning;

use nkeys::KeyPair;

use crate::failure::{Failure, Retry};
use crate::secret_value::SecretValue;

/// What a valid user JWT says about the user. Nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    /// The user's public nkey (`U...`): the JWT subject, and the seed's public key.
    pub user_public_key: String,
    /// The public key that signed the JWT (`A...`): the account, or one of its signing keys.
    pub issuer: String,
    /// The account the user belongs to: `nats.issuer_account` when a signing key issued the JWT,
    /// else the issuer.
    pub account: String,
    /// The user's name (`name` claim), if any.
    pub name: Option<String>,
    /// When the JWT expires, unix seconds; `None` when it never does.
    pub expires: Option<i64>,
}

/// Why a user JWT and seed cannot be used. Each variant is a status condition reason
/// ([`CredentialsError::reason`]); the message says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The JWT cannot be decoded.
    #[error(
        "the user JWT (jwt) is malformed: {0}; put the whole user JWT in it, as printed by \
         `nsc describe user --raw` or found between the BEGIN/END NATS USER JWT lines of a .creds file"
    )]
    JwtMalformed(jwt::JwtError),
    /// The JWT is valid but of another kind (an account or operator JWT).
    #[error(
        "the user JWT (jwt) is {found}, not a user JWT; issue a JWT for a user of the account \
         and put that in the Secret"
    )]
    JwtNotUser {
        /// What was found, e.g. "an account JWT".
        found: String,
    },
    /// The JWT's issuer is not an account key: no NATS server accepts such a user JWT.
    #[error(
        "the user JWT (jwt) is signed by {issuer}, which is not an account key; a user JWT must \
         be issued by its account (or an account signing key)"
    )]
    JwtIssuerNotAccount {
        /// The issuer's public key.
        issuer: String,
    },
    /// The JWT expired.
    #[error(
        "the user JWT (jwt) expired at {}; issue a new user JWT (e.g. `nsc edit user --expiry` \
         then `nsc generate creds`) and update the Secret",
        format_unix(*.expired_at)
    )]
    JwtExpired {
        /// The `exp` claim, unix seconds.
        expired_at: i64,
    },
    /// The JWT is not valid yet (`nbf` in the future). The only variant that heals with time.
    #[error(
        "the user JWT (jwt) is not valid before {}; wait, or issue a user JWT without a start time",
        format_unix(*.not_before)
    )]
    JwtNotYetValid {
        /// The `nbf` claim, unix seconds.
        not_before: i64,
    },
    /// The signature does not verify with the issuer's key: the token was altered or truncated.
    #[error(
        "the user JWT (jwt) signature does not verify with its issuer's key {issuer}: the token \
         was altered or truncated; copy the user JWT again"
    )]
    JwtSignatureInvalid {
        /// The issuer's public key.
        issuer: String,
    },
    /// The seed is not an nkey seed.
    #[error("the seed (seedKey) is malformed: {detail}; put the user's nkey seed (SU...) in it")]
    SeedMalformed {
        /// What is wrong, without quoting the seed.
        detail: &'static str,
    },
    /// The seed is a valid seed of another kind.
    #[error(
        "the seed (seedKey) is {kind} seed, not a user seed (SU...); put the seed of the user the \
         JWT was issued to in it"
    )]
    SeedNotUser {
        /// The kind with its article, e.g. "an account".
        kind: &'static str,
    },
    /// The seed belongs to another user than the JWT's subject.
    #[error(
        "the seed (seedKey) is for user {seed_public_key} but the user JWT (jwt) is for user \
         {jwt_subject}; put the matching JWT and seed (from the same .creds file) in the Secret"
    )]
    SeedDoesNotMatchJwt {
        /// The public key of the given seed.
        seed_public_key: String,
        /// The JWT's subject.
        jwt_subject: String,
    },
}

impl Failure for CredentialsError {
    /// The status condition reason: the variant name, CamelCase.
    fn reason(&self) -> &'static str {
        match self {
            CredentialsError::JwtMalformed(_) => "JwtMalformed",
            CredentialsError::JwtNotUser { .. } => "JwtNotUser",
            CredentialsError::JwtIssuerNotAccount { .. } => "JwtIssuerNotAccount",
            CredentialsError::JwtExpired { .. } => "JwtExpired",
            CredentialsError::JwtNotYetValid { .. } => "JwtNotYetValid",
            CredentialsError::JwtSignatureInvalid { .. } => "JwtSignatureInvalid",
            CredentialsError::SeedMalformed { .. } => "SeedMalformed",
            CredentialsError::SeedNotUser { .. } => "SeedNotUser",
            CredentialsError::SeedDoesNotMatchJwt { .. } => "SeedDoesNotMatchJwt",
        }
    }

    /// Only a change of the credentials can fix it (so the reconciler waits for a change instead
    /// of retrying), except [`CredentialsError::JwtNotYetValid`], which becomes valid on its own
    /// at `nbf`: retried with back-off.
    fn retry(&self) -> Retry {
        match self {
            CredentialsError::JwtNotYetValid { .. } => Retry::Backoff,
            _ => Retry::AwaitChange,
        }
    }
}

/// Checks a user JWT and seed before connecting with them, at time `now_unix` (unix seconds).
///
/// In order: the JWT decodes; its signature verifies with its issuer's key (claims that fail it
/// cannot be trusted, so they are not reported on); it is a user JWT issued by an account; it is
/// valid at `now_unix`; the seed is a user seed; the seed's public key is the JWT's subject.
/// Trailing or embedded line breaks are ignored in both, as the Go decoders that `nats-server`
/// and Dapr use ignore them.
pub fn check_user_credentials(
    jwt: &SecretValue,
    seed: &SecretValue,
    now_unix: i64,
) -> Result<UserIdentity, CredentialsError> {
    let decoded = jwt::decode(jwt.expose()).map_err(CredentialsError::JwtMalformed)?;
    decoded.verify().map_err(|e| match e {
        jwt::JwtError::SignatureInvalid { issuer } => {
            CredentialsError::JwtSignatureInvalid { issuer }
        }
        other => CredentialsError::JwtMalformed(other),
    })?;
    let claims = decoded.claims;

    match claims.claim_type() {
        Some("user") => {}
        other => {
            return Err(CredentialsError::JwtNotUser {
                found: describe_claim_type(other),
            });
        }
    }
    if !claims.iss.starts_with('A') {
        return Err(CredentialsError::JwtIssuerNotAccount {
            issuer: claims.iss.clone(),
        });
    }
    // Same comparisons as nats-io/jwt: expired strictly after `exp`, `0` means unset.
    if let Some(not_before) = claims.nbf.filter(|nbf| *nbf > 0 && *nbf > now_unix) {
        return Err(CredentialsError::JwtNotYetValid { not_before });
    }
    if let Some(expired_at) = claims.expires().filter(|exp| now_unix > *exp) {
        return Err(CredentialsError::JwtExpired { expired_at });
    }

    let user = user_key_pair(seed)?;
    let seed_public_key = user.public_key();
    if seed_public_key != claims.sub {
        return Err(CredentialsError::SeedDoesNotMatchJwt {
            seed_public_key,
            jwt_subject: claims.sub,
        });
    }

    Ok(UserIdentity {
        account: claims.issuer_account().to_owned(),
        user_public_key: claims.sub,
        issuer: claims.iss,
        name: claims.name,
        expires: claims.exp.filter(|exp| *exp > 0),
    })
}

/// Parses a user seed into the key pair that signs the server's nonce on connect.
///
/// Line breaks are ignored (a seed read from a Secret often ends with one); anything else that is
/// not a user seed is an error saying what it is instead.
pub fn user_key_pair(seed: &SecretValue) -> Result<KeyPair, CredentialsError> {
    let seed: String = seed
        .expose()
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    let malformed = |detail| Err(CredentialsError::SeedMalformed { detail });
    if seed.is_empty() {
        return malformed("it is empty");
    }
    if seed.contains("-----BEGIN") {
        return malformed(
            "it looks like a whole .creds file; put only the seed line (starting with SU) in it",
        );
    }
    let (kind, _) = match nkeys::decode_seed(&seed) {
        Ok(decoded) => decoded,
        Err(_) if KeyPair::from_public_key(&seed).is_ok() => {
            return malformed("it is a public key, not a seed (a seed starts with S)");
        }
        Err(_) => {
            return malformed(
                "it is not an nkey seed (wrong length, characters outside base32, or checksum)",
            );
        }
    };
    if let Some(kind) = seed_kind_other_than_user(kind) {
        return Err(CredentialsError::SeedNotUser { kind });
    }
    KeyPair::from_seed(&seed).or_else(|_| malformed("it is not a valid nkey seed"))
}

/// The kind of a seed's prefix byte (as `nkeys::decode_seed` returns it), or `None` for a user.
/// The values are the nkeys prefix bytes (base32 letter index << 3), which the crate keeps private.
fn seed_kind_other_than_user(prefix: u8) -> Option<&'static str> {
    const ACCOUNT: u8 = 0; // 'A'
    const CLUSTER: u8 = 2 << 3; // 'C'
    const MODULE: u8 = 12 << 3; // 'M'
    const SERVER: u8 = 13 << 3; // 'N'
    const OPERATOR: u8 = 14 << 3; // 'O'
    const USER: u8 = 20 << 3; // 'U'
    const SERVICE: u8 = 21 << 3; // 'V'
    const CURVE: u8 = 23 << 3; // 'X'
    match prefix {
        USER => None,
        ACCOUNT => Some("an account"),
        OPERATOR => Some("an operator"),
        SERVER => Some("a server"),
        CLUSTER => Some("a cluster"),
        MODULE => Some("a module"),
        SERVICE => Some("a service"),
        CURVE => Some("a curve (xkey)"),
        _ => Some("an unknown kind of"),
    }
}

/// "an account JWT", "an operator JWT", ...: known claim types only, so that arbitrary claim
/// content is never echoed.
fn describe_claim_type(found: Option<&str>) -> String {
    match found {
        Some(t @ ("operator" | "account" | "activation" | "authorization" | "generic")) => {
            let article = if t.starts_with(['a', 'o']) { "an" } else { "a" };
            format!("{article} {t} JWT")
        }
        Some(_) => "a JWT of an unknown type".to_owned(),
        None => "a JWT without a NATS claim type (nats.type)".to_owned(),
    }
}

/// RFC 3339 for messages, falling back to the raw number when out of range.
fn format_unix(secs: i64) -> String {
    match jiff::Timestamp::from_second(secs) {
        Ok(ts) => ts.to_string(),
        Err(_) => format!("unix time {secs}"),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    struct Fixture {
        account: KeyPair,
        user: KeyPair,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                account: KeyPair::new_account(),
                user: KeyPair::new_user(),
            }
        }

        fn jwt(&self, expires: Option<i64>) -> SecretValue {
            SecretValue::new(
                jwt::user_jwt(&self.account, &self.user.public_key(), "orders", expires).unwrap(),
            )
        }

        fn seed(&self) -> SecretValue {
            SecretValue::new(self.user.seed().unwrap())
        }
    }

    fn check(jwt: &SecretValue, seed: &SecretValue) -> Result<UserIdentity, CredentialsError> {
        check_user_credentials(jwt, seed, NOW)
    }

    #[test]
    fn accepts_a_matching_user_jwt_and_seed() {
        let f = Fixture::new();
        let id = check(&f.jwt(Some(NOW + 60)), &f.seed()).unwrap();
        assert_eq!(
            id,
            UserIdentity {
                user_public_key: f.user.public_key(),
                issuer: f.account.public_key(),
                account: f.account.public_key(),
                name: Some("orders".to_owned()),
                expires: Some(NOW + 60),
            }
        );
        assert_eq!(check(&f.jwt(None), &f.seed()).unwrap().expires, None);
    }

    #[test]
    fn tolerates_line_breaks_from_secrets() {
        let f = Fixture::new();
        let jwt = SecretValue::new(format!("{}\n", f.jwt(None).expose()));
        let seed = SecretValue::new(format!("{}\r\n", f.seed().expose()));
        check(&jwt, &seed).unwrap();
        user_key_pair(&seed).unwrap();
    }

    #[test]
    fn expiry_is_inclusive_of_exp_like_nats_io_jwt() {
        let f = Fixture::new();
        check(&f.jwt(Some(NOW)), &f.seed()).unwrap();
        let err = check(&f.jwt(Some(NOW - 1)), &f.seed()).unwrap_err();
        assert_eq!(
            err,
            CredentialsError::JwtExpired {
                expired_at: NOW - 1
            }
        );
        assert_eq!(err.reason(), "JwtExpired");
        let msg = err.to_string();
        assert!(msg.contains("2027-01-15T07:59:59Z"), "{msg}");
        assert!(msg.contains("issue a new user JWT"), "{msg}");
    }

    #[test]
    fn not_yet_valid_is_the_only_transient_error() {
        let f = Fixture::new();
        let mut claims = jwt::Claims::new("user", f.user.public_key(), "u");
        claims.nbf = Some(NOW + 10);
        let token = SecretValue::new(jwt::encode(&claims, &f.account).unwrap());
        let err = check(&token, &f.seed()).unwrap_err();
        assert_eq!(
            err,
            CredentialsError::JwtNotYetValid {
                not_before: NOW + 10
            }
        );
        assert!(!err.is_permanent());
        assert!(check_user_credentials(&token, &f.seed(), NOW + 10).is_ok());
    }

    #[test]
    fn rejects_account_and_operator_jwts() {
        let f = Fixture::new();
        let operator = KeyPair::new_operator();
        let account_jwt = SecretValue::new(
            jwt::account_jwt(&operator, &f.account.public_key(), "app", true).unwrap(),
        );
        let err = check(&account_jwt, &f.seed()).unwrap_err();
        assert_eq!(err.reason(), "JwtNotUser");
        assert!(err.to_string().contains("an account JWT"), "{err}");

        let operator_jwt = SecretValue::new(jwt::operator_jwt(&operator, "op").unwrap());
        let err = check(&operator_jwt, &f.seed()).unwrap_err();
        assert!(err.to_string().contains("an operator JWT"), "{err}");
    }

    #[test]
    fn rejects_a_user_jwt_not_issued_by_an_account() {
        let f = Fixture::new();
        let claims = jwt::Claims::new("user", f.user.public_key(), "self");
        let token = SecretValue::new(jwt::encode(&claims, &f.user).unwrap());
        assert_eq!(
            check(&token, &f.seed()).unwrap_err(),
            CredentialsError::JwtIssuerNotAccount {
                issuer: f.user.public_key()
            }
        );
    }

    #[test]
    fn rejects_a_tampered_jwt() {
        let f = Fixture::new();
        let token = f.jwt(None);
        let parts: Vec<&str> = token.expose().split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["exp"] = serde_json::Value::from(NOW + 1_000_000);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
            parts[2]
        );
        let err = check(&SecretValue::new(forged), &f.seed()).unwrap_err();
        assert_eq!(
            err,
            CredentialsError::JwtSignatureInvalid {
                issuer: f.account.public_key()
            }
        );
    }

    #[test]
    fn rejects_malformed_jwts_saying_which_part() {
        let f = Fixture::new();
        let token = f.jwt(None);
        let parts: Vec<&str> = token.expose().split('.').collect();
        let cases = [
            (String::new(), "empty"),
            (parts[..2].join("."), "2 dot-separated part(s)"),
            (
                format!("%%%.{}.{}", parts[1], parts[2]),
                "header (first part) is not base64url",
            ),
            (
                format!(
                    "{}.{}.{}",
                    parts[0],
                    URL_SAFE_NO_PAD.encode("[1,"),
                    parts[2]
                ),
                "claims (second part) is not JSON",
            ),
            (
                format!("{}.{}.%%", parts[0], parts[1]),
                "signature (third part) is not base64url",
            ),
        ];
        for (token, expected) in cases {
            let err = check(&SecretValue::new(token), &f.seed()).unwrap_err();
            assert_eq!(err.reason(), "JwtMalformed");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn rejects_seeds_that_are_not_user_seeds() {
        let f = Fixture::new();
        let jwt = f.jwt(None);
        let cases = [
            (KeyPair::new_account(), "an account"),
            (KeyPair::new_operator(), "an operator"),
            (KeyPair::new_server(), "a server"),
            (KeyPair::new_cluster(), "a cluster"),
        ];
        for (kp, kind) in cases {
            let err = check(&jwt, &SecretValue::new(kp.seed().unwrap())).unwrap_err();
            assert_eq!(err, CredentialsError::SeedNotUser { kind });
            assert!(
                err.to_string().contains(&format!("is {kind} seed")),
                "{err}"
            );
        }
    }

    #[test]
    fn rejects_malformed_seeds() {
        let f = Fixture::new();
        let jwt = f.jwt(None);
        let seed = f.seed();
        let s = seed.expose();
        let mut flipped: Vec<char> = s.chars().collect();
        flipped[10] = if flipped[10] == 'A' { 'B' } else { 'A' };
        let cases = [
            (String::new(), "empty"),
            (s[..s.len() - 1].to_owned(), "not an nkey seed"),
            (flipped.into_iter().collect(), "not an nkey seed"),
            (f.user.public_key(), "public key, not a seed"),
            (
                format!("-----BEGIN USER NKEY SEED-----\n{s}\n------END USER NKEY SEED------"),
                ".creds file",
            ),
        ];
        for (seed, expected) in cases {
            let err = check(&jwt, &SecretValue::new(seed)).unwrap_err();
            assert_eq!(err.reason(), "SeedMalformed");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn rejects_a_seed_of_another_user_naming_both_public_keys() {
        let f = Fixture::new();
        let other = KeyPair::new_user();
        let err = check(&f.jwt(None), &SecretValue::new(other.seed().unwrap())).unwrap_err();
        assert_eq!(
            err,
            CredentialsError::SeedDoesNotMatchJwt {
                seed_public_key: other.public_key(),
                jwt_subject: f.user.public_key(),
            }
        );
        assert!(err.is_permanent());
    }

    #[test]
    fn reasons_are_the_variant_names() {
        let errors = [
            CredentialsError::JwtMalformed(jwt::JwtError::Empty),
            CredentialsError::JwtNotUser {
                found: String::new(),
            },
            CredentialsError::JwtIssuerNotAccount {
                issuer: String::new(),
            },
            CredentialsError::JwtExpired { expired_at: 0 },
            CredentialsError::JwtNotYetValid { not_before: 0 },
            CredentialsError::JwtSignatureInvalid {
                issuer: String::new(),
            },
            CredentialsError::SeedMalformed { detail: "" },
            CredentialsError::SeedNotUser { kind: "" },
            CredentialsError::SeedDoesNotMatchJwt {
                seed_public_key: String::new(),
                jwt_subject: String::new(),
            },
        ];
        for e in errors {
            let debug = format!("{e:?}");
            assert!(debug.starts_with(e.reason()), "{debug} vs {}", e.reason());
        }
    }

    /// Formats every error this module produces from real credentials and checks that no message
    /// (Display or Debug) contains the JWT, the seed, or a piece of either.
    #[test]
    fn messages_never_contain_the_jwt_or_the_seed() {
        let f = Fixture::new();
        let operator = KeyPair::new_operator();
        let other_user = KeyPair::new_user();
        let good_jwt = f.jwt(None).expose().to_owned();
        let good_seed = f.seed().expose().to_owned();
        let parts: Vec<&str> = good_jwt.split('.').collect();
        let mut tampered = good_jwt.clone();
        tampered.replace_range(parts[0].len() + 5..parts[0].len() + 6, "x");

        let inputs: Vec<(String, String)> = vec![
            (good_jwt.clone(), String::new()),
            (good_jwt.clone(), good_seed[..40].to_owned()),
            (good_jwt.clone(), other_user.seed().unwrap()),
            (good_jwt.clone(), KeyPair::new_account().seed().unwrap()),
            (good_jwt.clone(), format!("-----BEGIN X-----\n{good_seed}")),
            (f.jwt(Some(NOW - 5)).expose().to_owned(), good_seed.clone()),
            (tampered, good_seed.clone()),
            (parts[..2].join("."), good_seed.clone()),
            (
                format!("{}.{}.{}", parts[0], parts[0], parts[2]),
                good_seed.clone(),
            ),
            (
                format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
                good_seed.clone(),
            ),
            (
                jwt::account_jwt(&operator, &f.account.public_key(), "a", true).unwrap(),
                good_seed.clone(),
            ),
        ];
        for (token, seed) in inputs {
            let err = check(
                &SecretValue::new(token.clone()),
                &SecretValue::new(seed.clone()),
            )
            .unwrap_err();
            let text = format!("{err} {err:?}");
            let mut secrets: Vec<&str> = token.split('.').filter(|p| !p.is_empty()).collect();
            secrets.push(&token);
            if !seed.is_empty() {
                secrets.push(&seed);
            }
            for secret in secrets {
                // Every 12-character window: no piece of the secret, not only the whole of it.
                let chars: Vec<char> = secret.chars().collect();
                for window in chars.windows(12.min(chars.len())) {
                    let piece: String = window.iter().collect();
                    assert!(
                        !text.contains(&piece),
                        "{} leaks {piece:?}: {text}",
                        err.reason()
                    );
                }
            }
        }
    }
}
