//! Minting NATS JWTs: [`encode`] signs the users the operator mints per Component; the rest is
//! for tests and benchmarks only (the `test-support` feature): they run a `nats-server` in
//! operator mode without the `nsc` tool.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde::Serialize;
use serde_json::Value;
#[cfg(any(test, feature = "test-support"))]
use serde_json::json;
use sha2::{Digest, Sha512_256};

use super::{CLAIMS_VERSION, Claims, Header, JwtError};

/// `-1` in NATS limits means "no limit"; `0` means "none allowed".
#[cfg(any(test, feature = "test-support"))]
const NO_LIMIT: i64 = -1;

/// Signs `claims` with `signer` and returns the JWT.
///
/// Sets `iss` to the signer's public key, `iat` to now, `nats.version` to 2 (the signature covers
/// `header.claims`, which is what version 2 means to a verifier), and `jti` to the base32 (no
/// padding) SHA-512/256 of the claims JSON with `jti` empty. `nats-io/jwt` hashes only the
/// registered claims; servers treat `jti` as an opaque id, so hashing all of them is compatible.
pub fn encode(claims: &Claims, signer: &KeyPair) -> Result<String, JwtError> {
    let mut claims = claims.clone();
    claims.iss = signer.public_key();
    claims.iat = jiff::Timestamp::now().as_second();
    claims
        .nats
        .insert("version".to_owned(), Value::from(CLAIMS_VERSION));
    claims.jti = String::new();
    claims.jti = data_encoding::BASE32_NOPAD.encode(&Sha512_256::digest(to_json(&claims)));

    let header = URL_SAFE_NO_PAD.encode(to_json(&Header::default()));
    let payload = URL_SAFE_NO_PAD.encode(to_json(&claims));
    let signed = format!("{header}.{payload}");
    let signature = signer
        .sign(signed.as_bytes())
        .map_err(|_| JwtError::SignerHasNoSeed)?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these types cannot fail: string keys, no maps with non-string keys, no
    // fallible `Serialize` impls. An empty object keeps the function total all the same.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(any(test, feature = "test-support"))]
/// A self-signed operator JWT named `name`.
pub fn operator_jwt(operator: &KeyPair, name: &str) -> Result<String, JwtError> {
    encode(
        &Claims::new("operator", operator.public_key(), name),
        operator,
    )
}

#[cfg(any(test, feature = "test-support"))]
/// An account JWT for `account_pub`, signed by `operator`.
///
/// NATS limits are `-1` (unlimited): `0` would mean "no connections, no subscriptions". With
/// `jetstream`, the JetStream limits are unlimited too (`mem_storage` and `disk_storage` `-1`);
/// without, they are left out, which `nats-server` reads as JetStream disabled for the account.
pub fn account_jwt(
    operator: &KeyPair,
    account_pub: &str,
    name: &str,
    jetstream: bool,
) -> Result<String, JwtError> {
    let mut claims = Claims::new("account", account_pub, name);
    let mut limits = json!({
        // NatsLimits
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        // AccountLimits
        "imports": NO_LIMIT,
        "exports": NO_LIMIT,
        "wildcards": true,
        "conn": NO_LIMIT,
        "leaf": NO_LIMIT,
    });
    if jetstream && let Some(limits) = limits.as_object_mut() {
        // JetStreamLimits
        for field in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits.insert(field.to_owned(), Value::from(NO_LIMIT));
        }
    }
    claims.nats.insert("limits".to_owned(), limits);
    claims.nats.insert(
        "default_permissions".to_owned(),
        json!({ "pub": {}, "sub": {} }),
    );
    encode(&claims, operator)
}

#[cfg(any(test, feature = "test-support"))]
/// A user JWT for `user_pub`, signed by `account`, expiring at `expires` (unix seconds) if given.
///
/// The user has no permission restrictions and unlimited NATS limits (`-1`).
pub fn user_jwt(
    account: &KeyPair,
    user_pub: &str,
    name: &str,
    expires: Option<i64>,
) -> Result<String, JwtError> {
    let mut claims = Claims::new("user", user_pub, name);
    claims.exp = expires;
    for field in ["subs", "data", "payload"] {
        claims.nats.insert(field.to_owned(), Value::from(NO_LIMIT));
    }
    claims.nats.insert("pub".to_owned(), json!({}));
    claims.nats.insert("sub".to_owned(), json!({}));
    encode(&claims, account)
}
