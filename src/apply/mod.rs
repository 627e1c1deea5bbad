//! `apply`: the reconciler's pipeline run once on Dapr Component files instead of the API
//! server, for self-hosted Dapr (`dapr run`, Docker Compose, CI jobs).
//!
//! Reads the files as `check` does ([`crate::check::inputs`], [`crate::check::split_documents`]):
//! the `state.jetstream` and `pubsub.jetstream` Components, the secret store Components (their
//! `secretKeyRef`s are resolved from the local file and env stores as daprd does: [`secrets`]),
//! and the declarative Subscriptions (the topics of a pub/sub). Each Component then goes through
//! the reconciler's own steps: validation ([`crate::validate`], with the values read), the
//! execute step ([`crate::reconcile::kind::bucket_progress`],
//! [`crate::reconcile::kind::streams_progress`]: the pure plan carried out on NATS) and the pure
//! status decision; what the API server would be told is printed instead, one entry per
//! Component. With `--dry-run` the execute step runs in [`Mode::Audit`]: nothing mutating is
//! sent, and the plans are printed.
//!
//! There is no earlier status to go by: a bucket or stream the operator made for this Component
//! (`namespace/name`, the namespace `--namespace` when the file has none) is recognised by its
//! owner mark, one someone else made is verified only. The admin's server policy is a cluster
//! object and does not apply here. Values from secrets are never printed: every message comes
//! from the operator's own errors and status, which never hold them.

pub mod secrets;

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::check::{self, Finding, Input, OutputFormat};
use crate::crd::ConditionType;
use crate::dapr::Component;
use crate::metrics::Metrics;
use crate::nats::pool::ConnectionPool;
use crate::pubsub::Subscription;
use crate::reconcile::execute::{BucketStep, Mode, Nats, Progress};
use crate::reconcile::kind::{bucket_progress, streams_progress};
use crate::reconcile::stream::execute::RoundEnd;
use crate::validate::{Values, validate, validate_pubsub};

pub use secrets::LocalStores;

/// What `apply` is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Files, directories, or `-` for stdin.
    pub paths: Vec<PathBuf>,
    /// Text or JSON.
    pub output: OutputFormat,
    /// Print the plans, send nothing mutating.
    pub dry_run: bool,
    /// The namespace of resources whose files have none (daprd's `NAMESPACE`).
    pub namespace: String,
    /// Timeout of a NATS connect.
    pub connect_timeout: Duration,
    /// Timeout of each NATS request.
    pub request_timeout: Duration,
}

/// Where a Component stands after `apply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    /// Its bucket or streams exist and are as it asks.
    Ready,
    /// Dry run: a plan would make it ready; nothing was sent.
    Planned,
    /// Something stops it: the reason says what.
    NotReady,
}

/// What happened to one Component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The file as named on the command line (or found in a directory); `<stdin>` for `-`.
    pub file: String,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    /// The Component's namespace (`--namespace` when its file has none).
    pub namespace: String,
    /// The Component's name.
    pub name: String,
    /// `state.jetstream` or `pubsub.jetstream`, as written.
    #[serde(rename = "type")]
    pub type_: String,
    /// Ready, planned (dry run) or not ready.
    pub state: State,
    /// Ready's reason, as the operator's status would show it.
    pub reason: String,
    /// Ready's message: what is wrong and what to do, or what is there.
    pub message: String,
    /// What was done (created, updated), as the operator's Events would say it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<String>,
}

/// Counts of what was read and done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub files: usize,
    pub documents: usize,
    /// `state.jetstream` and `pubsub.jetstream` Components.
    pub components: usize,
    pub ready: usize,
    pub planned: usize,
    pub not_ready: usize,
    /// Problems of the files themselves (unreadable, not YAML, a Component that cannot be read).
    pub problems: usize,
}

/// Everything `apply` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// True when every Component is ready (or, in a dry run, planned) and the files had no
    /// problem.
    pub ok: bool,
    pub dry_run: bool,
    pub summary: Summary,
    /// Problems of the files, as `check` reports them.
    pub problems: Vec<Finding>,
    /// One entry per Component, in input order.
    pub components: Vec<Applied>,
}

/// A resource read from the files, and where.
struct Read<T> {
    file: String,
    document: usize,
    line: usize,
    object: T,
}

/// What the files hold.
#[derive(Default)]
struct Files {
    components: Vec<Read<Component>>,
    subscriptions: Vec<Subscription>,
    problems: Vec<Finding>,
    files: usize,
    documents: usize,
}

/// Reads every input; a resource with no namespace is put in `namespace`.
fn read_inputs(inputs: &[Input], namespace: &str) -> Files {
    let mut out = Files::default();
    for input in inputs {
        let (name, text) = match input {
            Input::Stdin => {
                let mut text = String::new();
                let read = std::io::stdin().read_to_string(&mut text);
                ("<stdin>".to_owned(), read.map(|_| text))
            }
            Input::File(path) => (path.display().to_string(), std::fs::read_to_string(path)),
        };
        match text {
            Ok(text) => read_text(&name, &text, namespace, &mut out),
            Err(e) => out.problems.push(problem(
                &name,
                0,
                0,
                check::UNREADABLE,
                format!("cannot read it: {e}"),
            )),
        }
    }
    out
}

fn problem(file: &str, document: usize, line: usize, reason: &str, message: String) -> Finding {
    Finding {
        file: file.to_owned(),
        document,
        line,
        column: None,
        kind: None,
        namespace: None,
        name: None,
        reason: reason.to_owned(),
        message,
    }
}

/// Reads one file's Components and Subscriptions; other kinds pass through.
fn read_text(file: &str, text: &str, namespace: &str, out: &mut Files) {
    out.files += 1;
    for doc in check::split_documents(text) {
        out.documents += 1;
        let value: serde_yaml::Value = match serde_yaml::from_str(doc.text) {
            Ok(v) => v,
            Err(e) => {
                out.problems.push(problem(
                    file,
                    doc.index,
                    doc.line,
                    check::INVALID_YAML,
                    format!(
                        "not valid YAML: {}",
                        check::relocate(&e.to_string(), doc.line)
                    ),
                ));
                continue;
            }
        };
        let field = |k: &str| value.get(k).and_then(serde_yaml::Value::as_str);
        let dapr = field("apiVersion").is_some_and(|v| v.starts_with("dapr.io/"));
        match (dapr, field("kind")) {
            (true, Some("Component")) => match serde_yaml::from_value::<Component>(value.clone()) {
                Ok(mut c) => {
                    if c.metadata.namespace.as_deref().is_none_or(str::is_empty) {
                        c.metadata.namespace = Some(namespace.to_owned());
                    }
                    out.components.push(Read {
                        file: file.to_owned(),
                        document: doc.index,
                        line: doc.line,
                        object: c,
                    });
                }
                Err(e) => out.problems.push(problem(
                    file,
                    doc.index,
                    doc.line,
                    check::INVALID_COMPONENT,
                    format!(
                        "this Component cannot be read: {}",
                        check::relocate(&e.to_string(), doc.line)
                    ),
                )),
            },
            (true, Some("Subscription")) => {
                if let Ok(mut s) = serde_yaml::from_value::<Subscription>(value.clone()) {
                    if s.metadata.namespace.as_deref().is_none_or(str::is_empty) {
                        s.metadata.namespace = Some(namespace.to_owned());
                    }
                    out.subscriptions.push(s);
                }
            }
            _ => {}
        }
    }
}

/// Runs the pipeline once on every Component of `files`, on the connections of `nats`; `env`
/// reads the environment (the env secret store).
async fn apply_files(files: Files, nats: Nats<'_>, env: &dyn Fn(&str) -> Option<String>) -> Report {
    let stores = LocalStores::new(
        &files
            .components
            .iter()
            .map(|r| r.object.clone())
            .collect::<Vec<_>>(),
    );
    let mut report = Report {
        dry_run: nats.mode == Mode::Audit,
        problems: files.problems,
        ..Report::default()
    };
    report.summary.files = files.files;
    report.summary.documents = files.documents;
    for read in &files.components {
        let component = &read.object;
        if !component.is_ours() {
            continue;
        }
        let (state, reason, message, done) =
            apply_one(component, &stores, &files.subscriptions, nats, env).await;
        report.components.push(Applied {
            file: read.file.clone(),
            document: read.document,
            line: read.line,
            namespace: component.metadata.namespace.clone().unwrap_or_default(),
            name: component.metadata.name.clone().unwrap_or_default(),
            type_: component.spec.type_.clone(),
            state,
            reason,
            message,
            done,
        });
    }
    let s = &mut report.summary;
    s.components = report.components.len();
    let count = |state| {
        report
            .components
            .iter()
            .filter(|a| a.state == state)
            .count()
    };
    s.ready = count(State::Ready);
    s.planned = count(State::Planned);
    s.not_ready = count(State::NotReady);
    s.problems = report.problems.len();
    report.ok = s.not_ready == 0 && s.problems == 0;
    report
}

/// The pipeline on one Component: its state, Ready's reason and message, and what was done.
async fn apply_one(
    component: &Component,
    stores: &LocalStores,
    subscriptions: &[Subscription],
    nats: Nats<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (State, String, String, Vec<String>) {
    let key = crate::reconcile::object_key(component);
    let name = component.metadata.name.clone().unwrap_or_default();
    let values = stores.resolve(component, env);
    let now = jiff::Timestamp::now().as_second();
    let (ready, planned, events) = if component.is_jetstream_pubsub() {
        let validation = validate_pubsub(component, Values::SelfHosted(&values), now);
        let (prepared, progress) =
            streams_progress(nats, component, &key, &validation, None, Ok(subscriptions)).await;
        // Planned: the first stream that is not as the Component needs has a plan (status
        // stops at that one).
        let planned = matches!(&progress, Some(Progress::Connected { step, .. })
        if step.rounds.as_ref().is_ok_and(|rounds| {
            rounds
                .iter()
                .find(|r| !r.end.is_done())
                .is_some_and(|r| matches!(r.end, RoundEnd::NotCarriedOut { .. }))
        }));
        let outcome = crate::reconcile::stream::status::decide(
            &key,
            None,
            &validation,
            prepared.as_ref(),
            progress.as_ref(),
        );
        let ready = outcome
            .conditions()
            .into_iter()
            .find(|c| c.type_ == ConditionType::Ready);
        (ready, planned.then(|| outcome.plan.clone()), outcome.events)
    } else {
        let validation = validate(component, Values::SelfHosted(&values), now);
        let progress = bucket_progress(nats, &key, &validation, None).await;
        let planned = matches!(&progress, Some(Progress::Connected { step, .. })
            if matches!(**step, BucketStep::NotCarriedOut { .. }));
        let outcome = crate::reconcile::status::decide(&name, None, &validation, progress.as_ref());
        (
            outcome.ready().cloned(),
            planned.then(|| outcome.plan.clone()),
            outcome.events,
        )
    };
    let (ok, reason, message) = ready.map_or_else(
        || (false, "NotChecked".to_owned(), String::new()),
        |c| (c.status == Some(true), c.reason, c.message),
    );
    // A dry run shows the plans themselves, as audit mode's status.plan has them.
    let (state, message) = match planned {
        _ if ok => (State::Ready, message),
        Some(plans) => (State::Planned, shown_plans(&plans)),
        None => (State::NotReady, message),
    };
    (
        state,
        reason,
        message,
        events.into_iter().map(|n| n.note).collect(),
    )
}

/// What a dry run would do, plan by plan (`would create KV_orders (the bucket does not
/// exist: ...)`, an update with each field's change); plans that change nothing are left out.
fn shown_plans(plans: &[crate::nats::stream::planned::Planned]) -> String {
    plans
        .iter()
        .filter(|p| p.action.mutates() || p.reason.is_some())
        .map(|p| format!("would {} ({})", p.summary(), p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The report as text: the files' problems as `check` prints them, then one line per Component
/// (`FILE:LINE: document N: Component NS/NAME: Reason: message`) with what was done below it.
pub fn render_text(report: &Report) -> String {
    let mut out = check::render_text(&check::Report {
        problems: report.problems.clone(),
        ..check::Report::default()
    });
    for a in &report.components {
        let state = match a.state {
            State::Ready => "",
            State::Planned => "planned: ",
            State::NotReady => "not ready: ",
        };
        let _ = writeln!(
            out,
            "{}:{}: document {}: Component {}/{}: {state}{}: {}",
            a.file, a.line, a.document, a.namespace, a.name, a.reason, a.message
        );
        for d in &a.done {
            let _ = writeln!(out, "  {d}");
        }
    }
    out
}

/// The one-line summary.
pub fn summary_line(report: &Report) -> String {
    let s = &report.summary;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut parts = vec![format!("{} ready", s.ready)];
    if report.dry_run {
        parts.push(format!("{} planned (nothing sent: dry run)", s.planned));
    }
    parts.push(format!("{} not ready", s.not_ready));
    if s.problems > 0 {
        parts.push(plural(s.problems, "file problem", "file problems"));
    }
    let read = format!(
        "{} in {}",
        plural(s.components, "JetStream Component", "JetStream Components"),
        plural(s.files, "file", "files")
    );
    format!(
        "{}: {read}: {}",
        if report.ok { "ok" } else { "not ok" },
        parts.join(", ")
    )
}

/// Runs `apply` and prints the report; `Err` (exit status 1) when a Component is not ready or a
/// file has a problem, with the summary as the message.
pub async fn run(options: Options) -> Result<(), String> {
    let files = read_inputs(&check::inputs(&options.paths), &options.namespace);
    let metrics = Metrics::new();
    let pool = ConnectionPool::new(options.connect_timeout, options.request_timeout, None);
    let nats = Nats {
        pool: &pool,
        metrics: &metrics,
        mode: if options.dry_run {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        // No cluster, so no NatsServerPolicy naming a provisioning identity.
        provisioning: None,
    };
    let env = |name: &str| std::env::var(name).ok();
    let report = apply_files(files, nats, &env).await;
    check::print_report(
        &report,
        report.ok,
        options.output,
        render_text(&report),
        summary_line(&report),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\n\
        spec:\n  type: state.jetstream\n  version: v1\n  metadata: []\n---\n\
        apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: o\n  namespace: \
        shop\nspec:\n  pubsubname: events\n  topic: orders\n---\n\
        apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n\
        kind: [oops\n---\n\
        apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec: 5\n";

    #[test]
    fn files_are_read_as_daprd_reads_its_folder() {
        let mut files = Files::default();
        read_text("f.yaml", FILES, "default", &mut files);
        assert_eq!((files.files, files.documents), (1, 5));
        // A Component with no namespace is in daprd's; a Subscription keeps its own.
        let c = &files.components[0];
        assert_eq!((c.document, c.line), (1, 1));
        assert_eq!(c.object.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            files.subscriptions[0].metadata.namespace.as_deref(),
            Some("shop")
        );
        let problems: Vec<_> = files
            .problems
            .iter()
            .map(|p| (p.document, p.line, p.reason.as_str()))
            .collect();
        assert_eq!(
            problems,
            [
                (4, 23, check::INVALID_YAML),
                (5, 25, check::INVALID_COMPONENT)
            ]
        );
        assert!(
            files.problems[0].message.contains("at line 24 column 1"),
            "{}",
            files.problems[0].message
        );
    }

    #[test]
    fn the_summary_counts_ready_planned_and_not_ready() {
        let applied = |state| Applied {
            file: "f.yaml".into(),
            document: 1,
            line: 1,
            namespace: "default".into(),
            name: "s".into(),
            type_: "state.jetstream".into(),
            state,
            reason: "BucketMissing".into(),
            message: "would create bucket b".into(),
            done: Vec::new(),
        };
        let report = Report {
            ok: true,
            dry_run: true,
            summary: Summary {
                files: 1,
                documents: 2,
                components: 2,
                ready: 1,
                planned: 1,
                ..Summary::default()
            },
            problems: Vec::new(),
            components: vec![applied(State::Ready), applied(State::Planned)],
        };
        assert_eq!(
            summary_line(&report),
            "ok: 2 JetStream Components in 1 file: 1 ready, 1 planned (nothing sent: dry run), 0 \
             not ready"
        );
        assert_eq!(
            render_text(&report).lines().nth(1),
            Some(
                "f.yaml:1: document 1: Component default/s: planned: BucketMissing: would create \
                 bucket b"
            )
        );
    }
}
