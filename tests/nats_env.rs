//! The nats-server test environment works as the other integration tests expect: a plain
//! JetStream server, an operator-mode server with minted JWT users, outages, and the
//! credentials checks agreeing with what the real server accepts.

use crate::support;

use std::time::Duration;

use async_nats::ConnectErrorKind;
use async_nats::jetstream::{self, kv};
use jetstream_kv_operator::credentials::{self, CredentialsError};
use jetstream_kv_operator::failure::Failure as _;
use jetstream_kv_operator::secret_value::SecretValue;
use support::nats::{NatsServer, user_connect_options};

const TIMEOUT: Duration = Duration::from_secs(10);

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

async fn create_bucket(client: async_nats::Client, bucket: &str) -> kv::Store {
    jetstream::new(client)
        .create_key_value(kv::Config {
            bucket: bucket.to_owned(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"))
}

#[tokio::test]
async fn plain_server_accepts_anonymous_clients_and_kv_buckets() {
    let server = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(TIMEOUT)
        .connect(server.url())
        .await
        .unwrap();

    let store = create_bucket(client, "orders").await;
    store.put("k", "v".into()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));

    let jsz = server.jsz();
    let streams = jsz["account_details"][0]["stream_detail"]
        .as_array()
        .unwrap();
    assert!(streams.iter().any(|s| s["name"] == "KV_orders"), "{jsz:#}");
    assert!(server.varz()["version"].as_str().unwrap().starts_with("2."));
}

#[tokio::test]
async fn operator_mode_user_creates_a_bucket_in_its_account() {
    let (server, accounts) = NatsServer::start_operator_mode();
    let (jwt, seed) = accounts.new_user("orders-app", None);
    let user_pub = nkeys::KeyPair::from_seed(&seed).unwrap().public_key();

    let client = user_connect_options(&jwt, &seed)
        .name("jko-test")
        .connection_timeout(TIMEOUT)
        .connect(server.url())
        .await
        .unwrap();
    let store = create_bucket(client.clone(), "orders").await;
    store.put("k", "v".into()).await.unwrap();
    client.flush().await.unwrap();

    let connz = server.connz();
    let conn = connz["connections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "jko-test"))
        .unwrap_or_else(|| panic!("no connection named jko-test: {connz:#}"));
    assert_eq!(conn["authorized_user"], user_pub.as_str());
    assert_eq!(conn["account"], accounts.account_public_key().as_str());
    assert_eq!(conn["issuer_key"], accounts.account_public_key().as_str());
    // The account JWT's name, not the user's.
    assert_eq!(conn["name_tag"], "APP");

    let jsz = server.monitor("/jsz?accounts=1&streams=1");
    let account = jsz["account_details"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["id"] == accounts.account_public_key().as_str())
        })
        .unwrap_or_else(|| {
            panic!(
                "no JetStream account {}: {jsz:#}",
                accounts.account_public_key()
            )
        });
    assert_eq!(account["name"], "APP");
    assert_eq!(account["stream_detail"][0]["name"], "KV_orders", "{jsz:#}");
}

async fn connect_error(server: &NatsServer, jwt: &str, seed: &str) -> async_nats::ConnectError {
    match user_connect_options(jwt, seed)
        .connection_timeout(TIMEOUT)
        .connect(server.url())
        .await
    {
        Ok(_) => panic!("the server accepted the user"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn operator_mode_rejects_a_user_of_an_unknown_account() {
    let (server, accounts) = NatsServer::start_operator_mode();
    let (jwt, seed) = accounts.user_of_unknown_account("stranger");
    let err = connect_error(&server, &jwt, &seed).await;
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
}

#[tokio::test]
async fn operator_mode_rejects_an_expired_user() {
    let (server, accounts) = NatsServer::start_operator_mode();
    let (jwt, seed) = accounts.new_user("late", Some(now() - 60));
    let err = connect_error(&server, &jwt, &seed).await;
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
}

#[tokio::test]
async fn operator_mode_rejects_a_seed_that_does_not_match_the_jwt() {
    let (server, accounts) = NatsServer::start_operator_mode();
    let (jwt, _) = accounts.new_user("a", None);
    let (_, other_seed) = accounts.new_user("b", None);
    let err = connect_error(&server, &jwt, &other_seed).await;
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
}

#[tokio::test]
async fn account_without_jetstream_connects_but_cannot_create_buckets() {
    let (server, accounts) = NatsServer::start_operator_mode();
    let (jwt, seed) = accounts.new_user_without_jetstream("nojs");
    let client = user_connect_options(&jwt, &seed)
        .connection_timeout(TIMEOUT)
        .connect(server.url())
        .await
        .unwrap();
    let err = jetstream::new(client)
        .create_key_value(kv::Config {
            bucket: "orders".to_owned(),
            ..Default::default()
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("created a bucket in an account without JetStream"));
    // The operator maps this to "JetStream disabled": the server's code is in the source chain.
    assert_eq!(
        err.kind(),
        jetstream::context::CreateKeyValueErrorKind::JetStream,
        "{err}"
    );
    assert_eq!(
        jetstream_error_code(&err),
        Some(jetstream::ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT),
        "{err}"
    );
}

/// The JetStream API error code somewhere in an async-nats error's source chain.
fn jetstream_error_code(err: &(dyn std::error::Error + 'static)) -> Option<jetstream::ErrorCode> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(js) = e.downcast_ref::<jetstream::Error>() {
            return Some(js.error_code());
        }
        // create_key_value asks for the account info first; its errors carry the code in the kind.
        if let Some(account) = e.downcast_ref::<jetstream::context::AccountError>()
            && let jetstream::context::AccountErrorKind::JetStream(js) = account.kind()
        {
            return Some(js.error_code());
        }
        current = e.source();
    }
    None
}

#[tokio::test]
async fn outage_keeps_the_stream_and_clients_reconnect() {
    let mut server = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(TIMEOUT)
        .connect(server.url())
        .await
        .unwrap();
    let store = create_bucket(client.clone(), "outage").await;
    store.put("k", "before".into()).await.unwrap();

    server.stop();
    assert!(!server.is_running());
    let down = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(1))
        .connect(server.url())
        .await;
    assert!(down.is_err(), "connected to a stopped server");

    server.start_again();
    // The client made before the outage reconnects on its own, and the data is still there.
    let value = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match store.get("k").await {
                Ok(value) => break value,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the client did not reconnect within 20s");
    assert_eq!(value.as_deref(), Some(&b"before"[..]));
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );

    let fresh = async_nats::connect(server.url()).await.unwrap();
    let stream = jetstream::new(fresh).get_stream("KV_outage").await.unwrap();
    assert_eq!(stream.cached_info().state.messages, 1);
}

#[tokio::test]
async fn credentials_check_agrees_with_the_server() {
    let (server, accounts) = NatsServer::start_operator_mode();
    let secret = SecretValue::new;

    let (jwt, seed) = accounts.new_user("orders-app", Some(now() + 3600));
    let identity =
        credentials::check_user_credentials(&secret(jwt.clone()), &secret(seed.clone()), now())
            .unwrap();
    assert_eq!(identity.account, accounts.account_public_key());
    assert_eq!(identity.name.as_deref(), Some("orders-app"));
    user_connect_options(&jwt, &seed)
        .connection_timeout(TIMEOUT)
        .connect(server.url())
        .await
        .unwrap();

    let (expired, expired_seed) = accounts.new_user("late", Some(now() - 60));
    let err = credentials::check_user_credentials(&secret(expired), &secret(expired_seed), now())
        .unwrap_err();
    assert!(matches!(err, CredentialsError::JwtExpired { .. }), "{err}");

    let err = credentials::check_user_credentials(
        &secret(accounts.account_jwt.clone()),
        &secret(seed.clone()),
        now(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "JwtNotUser", "{err}");

    let (_, other_seed) = accounts.new_user("other", None);
    let err =
        credentials::check_user_credentials(&secret(jwt), &secret(other_seed), now()).unwrap_err();
    assert_eq!(err.reason(), "SeedDoesNotMatchJwt", "{err}");
}

/// The parent-death signal is tied to the spawning thread; the support module spawns from a
/// process-long thread so that a server can outlive the (test) thread that started it.
#[tokio::test]
async fn server_outlives_the_thread_that_started_it() {
    let mut server = std::thread::spawn(NatsServer::start).join().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.is_running(), "{}", server.log_tail(20));
    async_nats::connect(server.url()).await.unwrap();
}

/// The lifecycle tests rely on this to show a refused change was never sent: an update that
/// NATS refuses (storage type changed) counts as an error in the server's JetStream API stats.
#[tokio::test]
async fn a_refused_stream_update_counts_as_an_api_error() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    create_bucket(client.clone(), "refused").await;
    let errors = || server.jsz()["api"]["errors"].as_u64().unwrap_or_default();
    let before = errors();
    let js = jetstream::new(client);
    let mut stream = js.get_stream("KV_refused").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.storage = jetstream::stream::StorageType::Memory;
    assert!(
        js.update_stream(config).await.is_err(),
        "NATS changed the storage type"
    );
    assert_eq!(errors(), before + 1);
}
