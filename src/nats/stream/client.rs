//! The NATS side of one stream (a KV bucket's `KV_<bucket>`, or a pub/sub's): the few requests a
//! plan needs.

use async_nats::jetstream::{self, stream};

use crate::nats::NatsError;

/// The NATS side of one stream: the requests a plan needs.
pub struct StreamClient<'a> {
    js: &'a jetstream::Context,
    name: String,
}

impl<'a> StreamClient<'a> {
    /// The stream `stream` (for a bucket, `KV_<bucket>`).
    pub fn new(js: &'a jetstream::Context, stream: &str) -> Self {
        Self {
            js,
            name: stream.to_owned(),
        }
    }

    /// The name and subjects of every stream of the account (one request per 256 streams).
    pub async fn all(js: &jetstream::Context) -> Result<Vec<(String, Vec<String>)>, NatsError> {
        use futures::TryStreamExt as _;
        js.streams()
            .map_ok(|info| (info.config.name, info.config.subjects))
            .try_collect()
            .await
            .map_err(|e| request_error("list streams", &e))
    }

    /// The live stream, or None when it does not exist. One read request.
    pub async fn fetch(&self) -> Result<Option<stream::Info>, NatsError> {
        match self.js.get_stream(&self.name).await {
            Ok(stream) => Ok(Some(stream.cached_info().clone())),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                jetstream::context::GetStreamErrorKind::JetStream(js) => {
                    Err(NatsError::from_jetstream("stream info", &js))
                }
                _ => Err(request_error("stream info", &e)),
            },
        }
    }

    /// Creates the stream. When someone else created it meanwhile (error 10058), returns the
    /// existing one so the caller plans again against it.
    pub async fn create(&self, config: stream::Config) -> Result<stream::Info, NatsError> {
        let asked = config.clone();
        match self.js.create_stream(config).await {
            // The create response carries the stream info: asking again would be a second request.
            Ok(stream) => Ok(stream.cached_info().clone()),
            Err(e) => match e.kind() {
                jetstream::context::CreateStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST =>
                {
                    self.fetch().await?.ok_or_else(|| NatsError::Request {
                        what: "create stream".into(),
                        detail: "the stream was reported to exist, then not found".into(),
                    })
                }
                jetstream::context::CreateStreamErrorKind::JetStream(js) => {
                    Err(crate::nats::cluster::with_placement_asked(
                        NatsError::from_jetstream("create stream", &js),
                        &asked,
                    ))
                }
                jetstream::context::CreateStreamErrorKind::JetStreamUnavailable => {
                    Err(NatsError::JetStreamDisabled {
                        servers: "the server".into(),
                    })
                }
                _ => Err(request_error("create stream", &e)),
            },
        }
    }

    /// Updates the stream in place.
    pub async fn update(&self, config: stream::Config) -> Result<stream::Info, NatsError> {
        let asked = config.clone();
        self.js
            .update_stream(config)
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::UpdateStreamErrorKind::JetStream(js) => {
                    crate::nats::cluster::with_placement_asked(
                        NatsError::from_jetstream("update stream", &js),
                        &asked,
                    )
                }
                _ => request_error("update stream", &e),
            })
    }

    /// Deletes the stream and every value in it.
    pub async fn delete(&self) -> Result<(), NatsError> {
        self.js
            .delete_stream(&self.name)
            .await
            .map(|_| ())
            .map_err(|e| request_error("delete stream", &e))
    }
}

fn request_error(what: &str, e: &dyn std::fmt::Display) -> NatsError {
    let detail = crate::nats::remote_text(&e.to_string());
    if detail.contains("timed out") {
        NatsError::Timeout { what: what.into() }
    } else if detail.contains("no responders") {
        NatsError::JetStreamDisabled {
            servers: "the server".into(),
        }
    } else {
        NatsError::Request {
            what: what.into(),
            detail,
        }
    }
}
