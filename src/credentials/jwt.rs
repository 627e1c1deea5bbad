//! NATS JWTs: decoding, signature verification, and minting.
//!
//! A NATS JWT is `base64url(header).base64url(claims).base64url(signature)` without padding. The
//! header is `{"typ":"JWT","alg":"ed25519-nkey"}`; the signature is the issuer's ed25519 (nkey)
//! signature. Operators sign accounts (and themselves), accounts sign users.
//!
//! The operator decodes and verifies user JWTs (see [`super::check_user_credentials`]), and
//! signs the users it mints per Component ([`encode`], used by [`super::minted`]). The rest of
//! the minting half (`operator_jwt`, `account_jwt`, `user_jwt`, in `jwt/mint.rs`) exists so that
//! the integration tests and benchmarks can run a `nats-server` in operator mode without the
//! `nsc` tool: only unit tests and the `test-support` feature (which the crate's own
//! dev-dependency on itself turns on) compile it. The JSON field names follow the Go library
//! `nats-io/jwt` v2 that `nats-server` decodes with.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod mint;
pub use mint::encode;
#[cfg(any(test, feature = "test-support"))]
pub use mint::{account_jwt, operator_jwt, user_jwt};

/// The header algorithm of a v2 NATS JWT, the only one this module writes.
pub const ALGORITHM: &str = "ed25519-nkey";

/// The header algorithm of a v1 NATS JWT; still accepted when decoding, as `nats-server` does.
pub const LEGACY_ALGORITHM: &str = "ed25519";

/// The claims format version this module writes (`nats.version`).
pub const CLAIMS_VERSION: i64 = 2;

/// The JOSE header of a NATS JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Token type: `JWT` (compared case-insensitively, as `nats-io/jwt` does).
    #[serde(default)]
    pub typ: String,
    /// Signature algorithm: `ed25519-nkey` (v2) or `ed25519` (v1).
    #[serde(default)]
    pub alg: String,
}

impl Default for Header {
    fn default() -> Self {
        Self {
            typ: "JWT".to_owned(),
            alg: ALGORITHM.to_owned(),
        }
    }
}

/// The claims of a NATS JWT: the registered JWT claims NATS uses, and the NATS-specific part
/// (`nats`) kept as JSON because its shape depends on the claim type.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Claims {
    /// Token id: base32 of a SHA-512/256 hash of the claims (set by [`encode`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// Issued at, unix seconds (set by [`encode`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iat: i64,
    /// Issuer: the public nkey that signed the token (set by [`encode`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// Subject: the public nkey the token describes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, unix seconds; absent or `0` means "never".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Not valid before, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The NATS-specific claims: `type` (`operator`, `account`, `user`, ...), `version`, limits,
    /// permissions, ...
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub nats: Map<String, Value>,
    /// Any other top-level field (a v1 token's `type`, ...), kept so a decoded token re-encodes
    /// to the same claims.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl Claims {
    /// Claims of the given type for `subject`, with `nats.type` and `nats.version` set.
    pub fn new(claim_type: &str, subject: impl Into<String>, name: impl Into<String>) -> Self {
        let mut nats = Map::new();
        nats.insert("type".to_owned(), Value::from(claim_type));
        nats.insert("version".to_owned(), Value::from(CLAIMS_VERSION));
        let name = name.into();
        Self {
            sub: subject.into(),
            name: (!name.is_empty()).then_some(name),
            nats,
            ..Self::default()
        }
    }

    /// The claim type: `nats.type` for v2 tokens, the top-level `type` for v1 tokens.
    pub fn claim_type(&self) -> Option<&str> {
        self.nats
            .get("type")
            .and_then(Value::as_str)
            .or_else(|| self.other.get("type").and_then(Value::as_str))
    }

    /// The claims format version, as `nats-io/jwt` derives it: `1` when the type is at the top
    /// level, else `nats.version` (`0` when absent). It decides what the signature covers.
    pub fn version(&self) -> i64 {
        if self.other.get("type").is_some_and(Value::is_string) {
            return 1;
        }
        self.nats
            .get("version")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    /// The expiry in unix seconds, if the token expires (`exp` absent or `<= 0` means never).
    pub fn expires(&self) -> Option<i64> {
        self.exp.filter(|exp| *exp > 0)
    }

    /// The account a user token belongs to: `nats.issuer_account` when an account signing key
    /// issued it, else the issuer itself.
    pub fn issuer_account(&self) -> &str {
        self.nats
            .get("issuer_account")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .unwrap_or(&self.iss)
    }
}

/// Which of the three dot-separated parts of a JWT a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtPart {
    /// The first part.
    Header,
    /// The second part.
    Claims,
    /// The third part.
    Signature,
}

impl fmt::Display for JwtPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwtPart::Header => "header (first part)",
            JwtPart::Claims => "claims (second part)",
            JwtPart::Signature => "signature (third part)",
        })
    }
}

/// Why a JWT could not be decoded, verified or minted.
///
/// Messages never quote the token: a JWT is handled as a credential, and `serde_json`'s own
/// messages can quote input, so they are not passed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token is empty.
    #[error("the JWT is empty")]
    Empty,
    /// The token does not have exactly three dot-separated parts.
    #[error("the JWT has {found} dot-separated part(s), expected 3 (header.claims.signature)")]
    WrongNumberOfParts {
        /// How many parts were found.
        found: usize,
    },
    /// A part is not unpadded base64url.
    #[error("the JWT {part} is not base64url")]
    NotBase64 {
        /// The part.
        part: JwtPart,
    },
    /// A part decodes but is not JSON.
    #[error("the JWT {part} is not JSON")]
    NotJson {
        /// The part.
        part: JwtPart,
    },
    /// A part is JSON but not of the expected shape (a field of the wrong type).
    #[error("the JWT {part} is JSON of the wrong shape (a field has the wrong type)")]
    UnexpectedJson {
        /// The part.
        part: JwtPart,
    },
    /// The header `typ` is not `JWT`.
    #[error("the JWT header type is not \"JWT\"")]
    NotJwtType,
    /// The header `alg` is not an nkey algorithm.
    #[error("the JWT header algorithm is {alg}, expected {ALGORITHM:?}")]
    UnsupportedAlgorithm {
        /// The algorithm, quoted when it is a short plain name, else a placeholder.
        alg: String,
    },
    /// The issuer (`iss`) is missing or not a public nkey.
    #[error("the JWT issuer (iss) is missing or not a public nkey")]
    InvalidIssuer,
    /// The signature does not verify with the issuer's public key.
    #[error("the JWT signature does not verify with its issuer's public key {issuer}")]
    SignatureInvalid {
        /// The issuer public key (not secret).
        issuer: String,
    },
    /// Minting failed: the signing key pair has no seed.
    #[error("cannot sign the JWT: the key pair has no seed (a public key only)")]
    SignerHasNoSeed,
}

/// A decoded, not yet verified, NATS JWT.
#[derive(Clone)]
pub struct DecodedJwt {
    /// The header.
    pub header: Header,
    /// The claims.
    pub claims: Claims,
    /// The bytes the signature covers (depends on the claims version).
    signed: Vec<u8>,
    signature: Vec<u8>,
}

// Only the decoded parts: the raw token is a credential and is not repeated in logs.
impl fmt::Debug for DecodedJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodedJwt")
            .field("header", &self.header)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl DecodedJwt {
    /// Verifies the signature with the public key named by the `iss` claim.
    ///
    /// This proves the token was signed by whoever holds that key, not that the key is trusted:
    /// trust (this issuer is an account the server knows) is the server's business.
    pub fn verify(&self) -> Result<(), JwtError> {
        let issuer =
            KeyPair::from_public_key(&self.claims.iss).map_err(|_| JwtError::InvalidIssuer)?;
        issuer
            .verify(&self.signed, &self.signature)
            .map_err(|_| JwtError::SignatureInvalid {
                issuer: self.claims.iss.clone(),
            })
    }
}

/// Decodes a JWT without verifying its signature.
///
/// Like the Go decoders, line breaks (`\r`, `\n`) anywhere in the token are ignored: a JWT pasted
/// into a Secret often ends with one, and `nats-server` accepts it.
pub fn decode(token: &str) -> Result<DecodedJwt, JwtError> {
    let token: String = token.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    if token.is_empty() {
        return Err(JwtError::Empty);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts[..] else {
        return Err(JwtError::WrongNumberOfParts { found: parts.len() });
    };

    let header: Header = parse_json(JwtPart::Header, header_b64)?;
    if !header.typ.eq_ignore_ascii_case("JWT") {
        return Err(JwtError::NotJwtType);
    }
    let alg = header.alg.to_ascii_lowercase();
    if alg != ALGORITHM && alg != LEGACY_ALGORITHM {
        return Err(JwtError::UnsupportedAlgorithm {
            alg: printable_algorithm(&header.alg),
        });
    }

    let claims: Claims = parse_json(JwtPart::Claims, claims_b64)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| JwtError::NotBase64 {
            part: JwtPart::Signature,
        })?;

    // v2 signs `header.claims`; v1 signed the claims part alone (nats-io/jwt's decoder).
    let signed = if claims.version() <= 1 {
        claims_b64.as_bytes().to_vec()
    } else {
        token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()].to_vec()
    };
    Ok(DecodedJwt {
        header,
        claims,
        signed,
        signature,
    })
}

/// Decodes a JWT and verifies its signature with its issuer's public key.
pub fn decode_verified(token: &str) -> Result<Claims, JwtError> {
    let decoded = decode(token)?;
    decoded.verify()?;
    Ok(decoded.claims)
}

fn parse_json<T: serde::de::DeserializeOwned>(part: JwtPart, b64: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| JwtError::NotBase64 { part })?;
    // Two steps so that "not JSON at all" and "JSON, but a field has the wrong type" read
    // differently; serde_json's own messages are not used since they can quote the input.
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::NotJson { part })?;
    serde_json::from_value(value).map_err(|_| JwtError::UnexpectedJson { part })
}

/// The algorithm name for an error message: quoted when it looks like an algorithm name (`HS256`,
/// `RS256`, `none`), so that arbitrary header content is never echoed.
fn printable_algorithm(alg: &str) -> String {
    let plain = !alg.is_empty()
        && alg.len() <= 16
        && alg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        format!("{alg:?}")
    } else {
        "not a recognised algorithm name".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha512_256};

    fn parts(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    fn claims_json(token: &str) -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(&parts(token)[1]).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn minted_user_jwt_decodes_and_verifies() {
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let token = user_jwt(&account, &user.public_key(), "app", Some(4_000_000_000)).unwrap();

        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.header, Header::default());
        decoded.verify().unwrap();
        let c = decoded.claims;
        assert_eq!(c.claim_type(), Some("user"));
        assert_eq!(c.version(), 2);
        assert_eq!(c.iss, account.public_key());
        assert_eq!(c.sub, user.public_key());
        assert_eq!(c.name.as_deref(), Some("app"));
        assert_eq!(c.expires(), Some(4_000_000_000));
        assert!(c.iat > 1_700_000_000);
        assert_eq!(c.issuer_account(), account.public_key());
    }

    #[test]
    fn jti_is_base32_sha512_256_of_claims_without_jti() {
        let op = KeyPair::new_operator();
        let token = operator_jwt(&op, "op").unwrap();
        let mut claims = decode(&token).unwrap().claims;
        let jti = std::mem::take(&mut claims.jti);
        let expected = data_encoding::BASE32_NOPAD
            .encode(&Sha512_256::digest(serde_json::to_vec(&claims).unwrap()));
        assert_eq!(jti, expected);
        assert_eq!(jti.len(), 52);
        assert!(!jti.contains('='));
    }

    #[test]
    fn minted_tokens_use_the_field_names_nats_server_reads() {
        let op = KeyPair::new_operator();
        let acc = KeyPair::new_account();
        let with_js = claims_json(&account_jwt(&op, &acc.public_key(), "app", true).unwrap());
        let limits = &with_js["nats"]["limits"];
        for field in [
            "subs", "data", "payload", "imports", "exports", "conn", "leaf",
        ] {
            assert_eq!(limits[field], -1, "{field}");
        }
        assert_eq!(limits["mem_storage"], -1);
        assert_eq!(limits["disk_storage"], -1);
        assert_eq!(with_js["nats"]["type"], "account");
        assert_eq!(with_js["nats"]["version"], 2);
        assert_eq!(with_js["iss"], op.public_key());

        let without_js = claims_json(&account_jwt(&op, &acc.public_key(), "sys", false).unwrap());
        assert!(without_js["nats"]["limits"].get("mem_storage").is_none());
        assert!(without_js["nats"]["limits"].get("disk_storage").is_none());

        let user =
            claims_json(&user_jwt(&acc, &KeyPair::new_user().public_key(), "u", None).unwrap());
        assert!(user.get("exp").is_none());
        assert_eq!(user["nats"]["subs"], -1);
    }

    #[test]
    fn operator_jwt_is_self_signed() {
        let op = KeyPair::new_operator();
        let claims = decode_verified(&operator_jwt(&op, "op").unwrap()).unwrap();
        assert_eq!(claims.iss, claims.sub);
        assert_eq!(claims.claim_type(), Some("operator"));
    }

    #[test]
    fn tampered_claims_fail_verification() {
        let account = KeyPair::new_account();
        let token = user_jwt(&account, &KeyPair::new_user().public_key(), "u", None).unwrap();
        let p = parts(&token);
        let mut claims = claims_json(&token);
        claims["name"] = Value::from("admin");
        let forged = format!(
            "{}.{}.{}",
            p[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
            p[2]
        );
        assert_eq!(
            decode(&forged).unwrap().verify(),
            Err(JwtError::SignatureInvalid {
                issuer: account.public_key()
            })
        );
    }

    #[test]
    fn signature_by_another_key_fails_verification() {
        let account = KeyPair::new_account();
        let other = KeyPair::new_account();
        let token = user_jwt(&other, &KeyPair::new_user().public_key(), "u", None).unwrap();
        let p = parts(&token);
        let mut claims = claims_json(&token);
        claims["iss"] = Value::from(account.public_key());
        let forged = format!(
            "{}.{}.{}",
            p[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
            p[2]
        );
        assert!(matches!(
            decode_verified(&forged),
            Err(JwtError::SignatureInvalid { .. })
        ));
    }

    #[test]
    fn legacy_algorithm_is_accepted_and_others_are_not() {
        let header =
            |alg: &str| URL_SAFE_NO_PAD.encode(format!(r#"{{"typ":"JWT","alg":"{alg}"}}"#));
        let claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"x","nats":{"type":"user","version":2}}"#);
        assert!(decode(&format!("{}.{claims}.AAAA", header("ed25519"))).is_ok());
        assert!(decode(&format!("{}.{claims}.AAAA", header("ED25519-NKEY"))).is_ok());
        assert_eq!(
            decode(&format!("{}.{claims}.AAAA", header("HS256"))).unwrap_err(),
            JwtError::UnsupportedAlgorithm {
                alg: "\"HS256\"".to_owned()
            }
        );
        let long = "x".repeat(40);
        let err = decode(&format!("{}.{claims}.AAAA", header(&long))).unwrap_err();
        assert!(!err.to_string().contains(&long));
    }

    #[test]
    fn v1_tokens_sign_the_claims_part_only() {
        let account = KeyPair::new_account();
        let claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iss":"{}","sub":"U","type":"user","nats":{{}}}}"#,
            account.public_key()
        ));
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"jwt","alg":"ed25519"}"#);
        let sig = URL_SAFE_NO_PAD.encode(account.sign(claims.as_bytes()).unwrap());
        let decoded = decode(&format!("{header}.{claims}.{sig}")).unwrap();
        assert_eq!(decoded.claims.version(), 1);
        assert_eq!(decoded.claims.claim_type(), Some("user"));
        decoded.verify().unwrap();
    }

    #[test]
    fn malformed_tokens_name_the_part() {
        assert_eq!(decode("").unwrap_err(), JwtError::Empty);
        assert_eq!(
            decode("a.b").unwrap_err(),
            JwtError::WrongNumberOfParts { found: 2 }
        );
        assert_eq!(
            decode("a.b.c.d").unwrap_err(),
            JwtError::WrongNumberOfParts { found: 4 }
        );
        assert_eq!(
            decode("!!!.b.c").unwrap_err(),
            JwtError::NotBase64 {
                part: JwtPart::Header
            }
        );
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let not_json = URL_SAFE_NO_PAD.encode("not json");
        assert_eq!(
            decode(&format!("{header}.{not_json}.AAAA")).unwrap_err(),
            JwtError::NotJson {
                part: JwtPart::Claims
            }
        );
        let wrong_shape = URL_SAFE_NO_PAD.encode(r#"{"exp":"tomorrow"}"#);
        assert_eq!(
            decode(&format!("{header}.{wrong_shape}.AAAA")).unwrap_err(),
            JwtError::UnexpectedJson {
                part: JwtPart::Claims
            }
        );
        let claims = URL_SAFE_NO_PAD.encode("{}");
        assert_eq!(
            decode(&format!("{header}.{claims}.a*b")).unwrap_err(),
            JwtError::NotBase64 {
                part: JwtPart::Signature
            }
        );
        let not_jwt = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWS","alg":"ed25519-nkey"}"#);
        assert_eq!(
            decode(&format!("{not_jwt}.{claims}.AAAA")).unwrap_err(),
            JwtError::NotJwtType
        );
    }

    #[test]
    fn line_breaks_are_ignored_like_the_go_decoders_do() {
        let account = KeyPair::new_account();
        let token = user_jwt(&account, &KeyPair::new_user().public_key(), "u", None).unwrap();
        decode_verified(&format!("{token}\r\n")).unwrap();
    }

    #[test]
    fn signing_with_a_public_key_only_is_an_error() {
        let public_only = KeyPair::from_public_key(&KeyPair::new_account().public_key()).unwrap();
        assert_eq!(
            user_jwt(&public_only, &KeyPair::new_user().public_key(), "u", None),
            Err(JwtError::SignerHasNoSeed)
        );
    }
}
