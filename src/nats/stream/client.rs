//! The NATS side of one stream (a KV bucket's `KV_<bucket>`, or a pub/sub's): the few requests a
//! plan needs.

use async_nats::jetstream::{self, stream};

use crate::nats::NatsError;
use crate::nats::pool::ServerErrors;

/// How much one listing of an account's streams may hold, and for how long it may go on.
#[derive(Clone, Debug)]
pub struct ListingLimits {
    pub streams: usize,
    pub subjects: usize,
    pub deadline: std::time::Duration,
}

/// Far above a real account (a KV bucket's stream has one subject, a Dapr stream at most
/// a thousand), and a few MiB of memory at most.
pub const LISTING_LIMITS: ListingLimits = ListingLimits {
    streams: 10_000,
    subjects: 100_000,
    deadline: std::time::Duration::from_secs(10),
};

/// The NATS side of one stream: the requests a plan needs.
pub struct StreamClient<'a> {
    js: &'a jetstream::Context,
    name: String,
    /// What the server reported on the connection: a request it refused (and the client saw
    /// time out) is told as refused, naming the subject.
    refusals: Option<&'a ServerErrors>,
}

/// The longest stream name a listing takes.
const MAX_STREAM_NAME: usize = 256;

impl<'a> StreamClient<'a> {
    /// The stream `stream` (for a bucket, `KV_<bucket>`).
    pub fn new(js: &'a jetstream::Context, stream: &str) -> Self {
        Self {
            js,
            name: stream.to_owned(),
            refusals: None,
        }
    }

    /// This client, telling a request the server refused (a permissions violation on the
    /// connection `refusals` are of) as refused rather than timed out.
    pub fn with_refusals(mut self, refusals: &'a ServerErrors) -> Self {
        self.refusals = Some(refusals);
        self
    }

    /// A failed request (`api`: its JetStream API subject after the API prefix): when it timed
    /// out and the server said it refused that subject, the refusal.
    fn failed(&self, what: &str, api: &str, e: &dyn std::fmt::Display) -> NatsError {
        let error = request_error(what, e);
        match self.refusals {
            Some(refusals) => refused(error, refusals, api),
            None => error,
        }
    }

    /// The name and subjects of every stream of the account (one request per 256 streams),
    /// within [`LISTING_LIMITS`]. The server says how many streams there are and the client
    /// asks for pages until it has them all: a hostile server (or a JetStream API answerer on a
    /// shared one) could keep sending pages of a megabyte each for ever, so the listing stops
    /// at a bound on streams, subjects and time, and says so.
    pub async fn all(js: &jetstream::Context) -> Result<Vec<(String, Vec<String>)>, NatsError> {
        Self::all_within(js, &LISTING_LIMITS).await
    }

    /// [`Self::all`] with other limits (tests).
    pub async fn all_within(
        js: &jetstream::Context,
        limits: &ListingLimits,
    ) -> Result<Vec<(String, Vec<String>)>, NatsError> {
        let mut out = Vec::new();
        let mut subjects = 0usize;
        read_within(
            js.streams(),
            limits,
            "list streams",
            |info: stream::Info| {
                let config = info.config;
                subjects = subjects.saturating_add(config.subjects.len());
                if out.len() >= limits.streams {
                    return Err(NatsError::ListingTooLong {
                        what: format!("holds more than {} streams", limits.streams),
                    });
                }
                if subjects > limits.subjects {
                    return Err(NatsError::ListingTooLong {
                        what: format!("holds more than {} stream subjects", limits.subjects),
                    });
                }
                out.push((config.name, config.subjects));
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }

    /// The names of the account's streams (one request per 1,024), within [`LISTING_LIMITS`]'s
    /// stream count and time, for the same reason as [`Self::all`].
    pub async fn names(js: &jetstream::Context) -> Result<Vec<String>, NatsError> {
        Self::names_within(js, &LISTING_LIMITS).await
    }

    /// [`Self::names`] with other limits (tests).
    pub async fn names_within(
        js: &jetstream::Context,
        limits: &ListingLimits,
    ) -> Result<Vec<String>, NatsError> {
        let mut out = Vec::new();
        read_within(js.stream_names(), limits, "list stream names", |name: String| {
            // nats-server refuses stream names longer than 256 bytes: a longer one is a hostile
            // server's.
            if out.len() >= limits.streams || name.len() > MAX_STREAM_NAME {
                return Err(NatsError::ListingTooLong {
                    what: format!(
                        "holds more than {} streams, or a name longer than {MAX_STREAM_NAME} bytes",
                        limits.streams
                    ),
                });
            }
            out.push(name);
            Ok(())
        })
        .await?;
        Ok(out)
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
                _ => Err(self.failed("stream info", &format!("STREAM.INFO.{}", self.name), &e)),
            },
        }
    }

    /// The stream's consumer `name` as the server reports it (its config, and whether a
    /// subscriber is bound to it), when it exists.
    pub async fn consumer(
        &self,
        name: &str,
    ) -> Result<Option<jetstream::consumer::Info>, NatsError> {
        use jetstream::response::Response;
        let subject = format!("CONSUMER.INFO.{}.{name}", self.name);
        match self
            .js
            .request::<_, _, Response<jetstream::consumer::Info>>(subject, &serde_json::json!({}))
            .await
        {
            Ok(Response::Ok(info)) => Ok(Some(info)),
            Ok(Response::Err { error })
                if error.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND =>
            {
                Ok(None)
            }
            Ok(Response::Err { error }) => Err(NatsError::from_jetstream("consumer info", &error)),
            Err(e) => Err(self.failed(
                "consumer info",
                &format!("CONSUMER.INFO.{}.{name}", self.name),
                &e,
            )),
        }
    }

    /// Deletes the stream's consumer `name` (gone already counts as deleted).
    pub async fn delete_consumer(&self, name: &str) -> Result<(), NatsError> {
        use jetstream::response::Response;
        let subject = format!("CONSUMER.DELETE.{}.{name}", self.name);
        match self
            .js
            .request::<_, _, Response<serde_json::Value>>(subject, &serde_json::json!({}))
            .await
        {
            Ok(Response::Ok(_)) => Ok(()),
            Ok(Response::Err { error })
                if error.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND =>
            {
                Ok(())
            }
            Ok(Response::Err { error }) => {
                Err(NatsError::from_jetstream("consumer delete", &error))
            }
            Err(e) => Err(self.failed(
                "consumer delete",
                &format!("CONSUMER.DELETE.{}.{name}", self.name),
                &e,
            )),
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
                _ => Err(self.failed("create stream", &format!("STREAM.CREATE.{}", self.name), &e)),
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
                _ => self.failed("update stream", &format!("STREAM.UPDATE.{}", self.name), &e),
            })
    }

    /// Deletes the stream and every value in it.
    pub async fn delete(&self) -> Result<(), NatsError> {
        self.js
            .delete_stream(&self.name)
            .await
            .map(|_| ())
            .map_err(|e| self.failed("delete stream", &format!("STREAM.DELETE.{}", self.name), &e))
    }
}

/// Reads a paged listing to its end within `limits.deadline`, each item handed to `keep`, which
/// refuses the listing (and ends it) when it holds too much.
async fn read_within<T, E: std::fmt::Display>(
    mut pages: impl futures::Stream<Item = Result<T, E>> + Unpin,
    limits: &ListingLimits,
    what: &str,
    mut keep: impl FnMut(T) -> Result<(), NatsError>,
) -> Result<(), NatsError> {
    use futures::StreamExt as _;
    let deadline = tokio::time::Instant::now() + limits.deadline;
    loop {
        let next = tokio::time::timeout_at(deadline, pages.next())
            .await
            .map_err(|_| NatsError::ListingTooLong {
                what: format!("took longer than {}s", limits.deadline.as_secs()),
            })?;
        let Some(item) = next else { return Ok(()) };
        keep(item.map_err(|e| request_error(what, &e))?)?;
    }
}

/// `error`, or, when it is a timeout and the server said (in `refusals`) it refused the request
/// `api` (its JetStream API subject after the API prefix), that refusal, naming the subject.
pub fn refused(error: NatsError, refusals: &ServerErrors, api: &str) -> NatsError {
    let NatsError::Timeout { what } = error else {
        return error;
    };
    match refusals.take_publish_refusal(api) {
        Some(subject) => NatsError::PermissionDenied {
            what,
            subject: crate::nats::remote_text(&subject),
        },
        None => NatsError::Timeout { what },
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
