//! `check`: the operator's manifest checks, offline, for CI.
//!
//! Reads multi-document YAML (files, directories, or stdin, e.g. `kustomize build` output), finds
//! the Dapr `Component`s of type `state.jetstream` or `pubsub.jetstream` and runs on each the reconciler's own
//! validation pipeline ([`crate::validate`]), offline. A problem therefore carries the same
//! CamelCase reason as the KeyValueBucket's `Ready` condition would, and the first problem of a
//! Component is the one the operator reports.
//!
//! What needs the cluster or NATS is not checked: values from `secretKeyRef`s are treated as
//! present but unknown (a note says which checks were skipped), and the bucket itself is not
//! looked at. Every other kind of object passes through untouched. Secret values (an inline `jwt`
//! or `seedKey`, a password in `natsURL`) are never printed: messages come from the operator's
//! own errors, which never hold them.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dapr::Component;
use crate::validate::{check_component, is_component_type};

/// Reason of a document that is not valid YAML (check only: the API server rejects it).
pub const INVALID_YAML: &str = "InvalidYAML";
/// Reason of a `dapr.io/v1alpha1` Component whose shape cannot be read (check only).
pub const INVALID_COMPONENT: &str = "InvalidComponent";
/// Reason of a path that cannot be read (check only).
pub const UNREADABLE: &str = "Unreadable";
/// Reason of the note on a value that comes from a Secret and is not read offline.
pub const SECRET_NOT_CHECKED: &str = "SecretValueNotChecked";

/// How `check` prints its findings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One line per finding, `FILE:LINE: document N: Component NS/NAME: Reason: message`.
    #[default]
    Text,
    /// One JSON object with a summary, the problems and the notes.
    Json,
}

/// One problem (or note) found in the input, with where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file as named on the command line (or found in a directory); `<stdin>` for `-`.
    pub file: String,
    /// 1-based index of the YAML document in the file, counting non-empty documents only.
    pub document: usize,
    /// 1-based line in the file: where the document starts, or where a YAML error is.
    pub line: usize,
    /// 1-based column of a YAML error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The object's kind, when the document was read as an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The object's namespace, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// CamelCase reason: the operator's own for Component problems.
    pub reason: String,
    /// What is wrong and what to do, as the operator would say it.
    pub message: String,
}

/// Counts of what was read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Files (and stdin) read.
    pub files: usize,
    /// Non-empty YAML documents read.
    pub documents: usize,
    /// `state.jetstream` and `pubsub.jetstream` Components checked.
    pub components: usize,
    /// Problems found.
    pub problems: usize,
    /// Notes (checks skipped because a value is in a Secret).
    pub notes: usize,
}

/// Everything `check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// True when there is no problem (notes do not count).
    pub ok: bool,
    /// Counts.
    pub summary: Summary,
    /// Problems, in input order.
    pub problems: Vec<Finding>,
    /// Notes, in input order.
    pub notes: Vec<Finding>,
}

/// One YAML document of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document<'a> {
    /// 1-based index among the file's non-empty documents.
    pub index: usize,
    /// 1-based line of the file where the document's text starts.
    pub line: usize,
    /// The document's text.
    pub text: &'a str,
}

/// Splits a YAML stream into its documents at `---` (document start) and `...` (document end)
/// marker lines, keeping where each starts. A marker at column 0 always ends the previous
/// document in YAML (even a block scalar), so splitting on lines is exact; splitting before
/// parsing lets a broken document be reported without hiding the ones after it. Documents with
/// nothing but blanks and comments are skipped and not counted.
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs: Vec<Document<'_>> = Vec::new();
    let mut start = 0; // byte offset of the current document's text
    let mut start_line = 1;
    let mut offset = 0;
    let mut bounds: Vec<(usize, usize, usize)> = Vec::new();
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        let marker = |m: &str| {
            line.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        };
        if marker("---") {
            bounds.push((start, offset, start_line));
            // Content after `--- ` on the marker line belongs to the new document.
            start = offset + 3;
            start_line = i + 1;
        } else if marker("...") {
            bounds.push((start, offset, start_line));
            start = offset + raw.len();
            start_line = i + 2;
        }
        offset += raw.len();
    }
    bounds.push((start, text.len(), start_line));
    for (from, to, line) in bounds {
        let chunk = &text[from..to];
        let empty = chunk.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l.starts_with('%')
        });
        if !empty {
            // Report the first line with content, not the marker's.
            let skipped = chunk
                .lines()
                .take_while(|l| {
                    let l = l.trim();
                    l.is_empty() || l.starts_with('#')
                })
                .count();
            let leading = chunk
                .split_inclusive('\n')
                .take(skipped)
                .map(str::len)
                .sum::<usize>();
            docs.push(Document {
                index: docs.len() + 1,
                line: line + skipped,
                text: &chunk[leading..],
            });
        }
    }
    docs
}

/// Checks one file's text and adds what it finds to `report`.
pub fn check_text(file: &str, text: &str, now_unix: i64, report: &mut Report) {
    report.summary.files += 1;
    for doc in split_documents(text) {
        report.summary.documents += 1;
        let at = |line: usize, column: Option<usize>, reason: &str, message: String| Finding {
            file: file.to_owned(),
            document: doc.index,
            line,
            column,
            kind: None,
            namespace: None,
            name: None,
            reason: reason.to_owned(),
            message,
        };
        let value: serde_yaml::Value = match serde_yaml::from_str(doc.text) {
            Ok(v) => v,
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (doc.line + l.line() - 1, Some(l.column())))
                    .unwrap_or((doc.line, None));
                report.problems.push(at(
                    line,
                    column,
                    INVALID_YAML,
                    format!("not valid YAML: {}", relocate(&e.to_string(), doc.line)),
                ));
                continue;
            }
        };
        if !is_dapr_component(&value) {
            continue;
        }
        let name_of = |key: &str| {
            value
                .get("metadata")
                .and_then(|m| m.get(key))
                .and_then(serde_yaml::Value::as_str)
                .map(str::to_owned)
        };
        let object = |mut f: Finding| {
            f.kind = Some("Component".to_owned());
            f.namespace = name_of("namespace");
            f.name = name_of("name");
            f
        };
        let component: Component = match serde_yaml::from_value(value.clone()) {
            Ok(c) => c,
            Err(e) => {
                report.problems.push(object(at(
                    doc.line,
                    None,
                    INVALID_COMPONENT,
                    format!(
                        "this Component cannot be read: {}; the API server would reject it, and \
                         the operator ignores Components it cannot read",
                        relocate(&e.to_string(), doc.line)
                    ),
                )));
                continue;
            }
        };
        if !component.is_ours() {
            continue;
        }
        report.summary.components += 1;
        let found = check_component(&component, now_unix);
        for problem in found.problems {
            report
                .problems
                .push(object(at(doc.line, None, &problem.reason, problem.message)));
        }
        for note in found.notes {
            report
                .notes
                .push(object(at(doc.line, None, SECRET_NOT_CHECKED, note)));
        }
    }
}

/// Whether a document is a Dapr Component (`dapr.io/v1alpha1`, kind `Component`).
fn is_dapr_component(value: &serde_yaml::Value) -> bool {
    let field = |k: &str| value.get(k).and_then(serde_yaml::Value::as_str);
    is_component_type(field("apiVersion"), field("kind"))
}

/// serde_yaml's message with each ` at line L column C` counted from the file's start instead
/// of the document's.
pub(crate) fn relocate(message: &str, first_line: usize) -> String {
    const AT: &str = " at line ";
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find(AT) {
        out.push_str(&rest[..i + AT.len()]);
        rest = &rest[i + AT.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(line) if rest[digits..].starts_with(" column ") => {
                let _ = write!(out, "{}", first_line + line.saturating_sub(1));
                rest = &rest[digits..];
            }
            _ => {}
        }
    }
    out.push_str(rest);
    out
}

/// An input of `check`: a file or stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    File(PathBuf),
}

/// Expands the command line's paths: `-` is stdin, a file is itself, a directory is every
/// `*.yaml` and `*.yml` file under it (recursively, sorted, hidden entries skipped). A path that
/// does not exist is returned as a file, so that reading it reports it.
pub fn inputs(paths: &[PathBuf]) -> Vec<Input> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            out.push(Input::Stdin);
        } else if path.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files);
            files.sort();
            out.extend(files.into_iter().map(Input::File));
        } else {
            out.push(Input::File(path.clone()));
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // Reported when read as a file.
        files.push(dir.to_path_buf());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Symbolic links to directories are not followed, so that a link loop cannot hang CI.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, files);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
        {
            files.push(path);
        }
    }
}

/// Reads and checks every input.
pub fn check_inputs(inputs: &[Input], now_unix: i64) -> Report {
    let mut report = Report::default();
    for input in inputs {
        let (name, text) = match input {
            Input::Stdin => {
                let mut text = String::new();
                let read = std::io::stdin().read_to_string(&mut text);
                ("<stdin>".to_owned(), read.map(|_| text))
            }
            Input::File(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|e| {
                    if path.is_dir() {
                        std::io::Error::other("it is a directory that cannot be listed")
                    } else {
                        e
                    }
                }),
            ),
        };
        match text {
            Ok(text) => check_text(&name, &text, now_unix, &mut report),
            Err(e) => report.problems.push(Finding {
                file: name,
                document: 0,
                line: 0,
                column: None,
                kind: None,
                namespace: None,
                name: None,
                reason: UNREADABLE.to_owned(),
                message: format!("cannot read it: {e}"),
            }),
        }
    }
    report.summary.problems = report.problems.len();
    report.summary.notes = report.notes.len();
    report.ok = report.problems.is_empty();
    report
}

/// The report as text: one line per problem, then one per note.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for (label, findings) in [("", &report.problems), ("note: ", &report.notes)] {
        for f in findings {
            let _ = write!(out, "{}", f.file);
            if f.line > 0 {
                let _ = write!(out, ":{}", f.line);
            }
            if let Some(c) = f.column {
                let _ = write!(out, ":{c}");
            }
            out.push_str(": ");
            if f.document > 0 {
                let _ = write!(out, "document {}: ", f.document);
            }
            if let Some(kind) = &f.kind {
                let name = f.name.as_deref().unwrap_or("<no name>");
                match &f.namespace {
                    Some(ns) => {
                        let _ = write!(out, "{kind} {ns}/{name}: ");
                    }
                    None => {
                        let _ = write!(out, "{kind} {name}: ");
                    }
                }
            }
            if label.is_empty() {
                let _ = writeln!(out, "{}: {}", f.reason, f.message);
            } else {
                let _ = writeln!(out, "{label}{}", f.message);
            }
        }
    }
    out
}

/// The one-line summary.
pub fn summary_line(report: &Report) -> String {
    let s = &report.summary;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let read = format!(
        "{} in {} ({})",
        plural(s.components, "JetStream Component", "JetStream Components"),
        plural(s.documents, "document", "documents"),
        plural(s.files, "file", "files"),
    );
    if report.ok {
        format!("ok: {read}, no problems")
    } else {
        format!("{}: {read}", plural(s.problems, "problem", "problems"))
    }
}

/// Runs `check` on the command line's paths and prints the report; `Err` (exit status 1) when
/// anything is wrong, with the summary as the message.
pub fn run(paths: &[PathBuf], format: OutputFormat) -> Result<(), String> {
    let now = jiff::Timestamp::now().as_second();
    let report = check_inputs(&inputs(paths), now);
    print_report(
        &report,
        report.ok,
        format,
        render_text(&report),
        summary_line(&report),
    )
}

/// Prints a report as `check` and `apply` do: as text (its lines, then the summary line when
/// all is well) or as JSON. Err carries the summary line when not all is well.
pub(crate) fn print_report(
    report: &impl serde::Serialize,
    ok: bool,
    format: OutputFormat,
    text: String,
    summary: String,
) -> Result<(), String> {
    match format {
        OutputFormat::Text => {
            print!("{text}");
            if ok {
                println!("{summary}");
            }
        }
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(report)
                .map_err(|e| format!("cannot render the report: {e}"))?;
            println!("{json}");
        }
    }
    if ok { Ok(()) } else { Err(summary) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::jwt;
    use crate::validate::{ComponentFindings, ObjectCheck, check_object};

    const NOW: i64 = 1_800_000_000;

    fn component(yaml: &str) -> Component {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn reasons(found: &ComponentFindings) -> Vec<&str> {
        found.problems.iter().map(|p| p.reason.as_str()).collect()
    }

    fn check(text: &str) -> Report {
        let mut report = Report::default();
        check_text("f.yaml", text, NOW, &mut report);
        report.summary.problems = report.problems.len();
        report.ok = report.problems.is_empty();
        report
    }

    /// A user JWT and seed, signed by a fresh account, expiring at `exp`.
    fn creds(exp: Option<i64>) -> (String, String) {
        let account = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        let token = jwt::user_jwt(&account, &user.public_key(), "u", exp).unwrap();
        (token, user.seed().unwrap())
    }

    const GOOD: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\n  \
        namespace: n\nspec:\n  type: state.jetstream\n  version: v1\n  metadata:\n  - name: \
        natsURL\n    value: nats://nats:4222\n  - name: bucket\n    value: orders\n";

    #[test]
    fn objects_as_json_are_checked_like_documents() {
        let json = |yaml: &str| -> serde_json::Value { serde_yaml::from_str(yaml).unwrap() };
        assert_eq!(
            check_object(&json(GOOD), NOW),
            ObjectCheck::Checked(ComponentFindings::default())
        );
        let ObjectCheck::Checked(found) = check_object(&json(&GOOD.replace("orders", "a.b")), NOW)
        else {
            panic!("a state.jetstream Component is checked");
        };
        assert_eq!(reasons(&found), ["InvalidBucketName"]);
        assert!(found.problems.iter().all(|p| p.is_permanent()));
        assert_eq!(found.permanent_problems().count(), 1);
        let redis = GOOD.replace("state.jetstream", "state.redis");
        assert_eq!(check_object(&json(&redis), NOW), ObjectCheck::NotOurs);
        let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        assert_eq!(check_object(&json(config_map), NOW), ObjectCheck::NotOurs);
        let unreadable =
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nspec:\n  metadata: {natsURL: n}\n";
        assert!(matches!(
            check_object(&json(unreadable), NOW),
            ObjectCheck::Unreadable(_)
        ));
    }

    #[test]
    fn a_valid_component_has_no_findings() {
        assert_eq!(
            check_component(&component(GOOD), NOW),
            ComponentFindings::default()
        );
    }

    #[test]
    fn metadata_and_annotation_problems_are_both_reported_in_the_reconcilers_order() {
        let c = component(
            "metadata:\n  annotations:\n    jetstreamkv.io/histroy: \"3\"\nspec:\n  type: \
             state.jetstream\n  version: v1\n  metadata:\n  - name: natsURL\n    value: \
             nats://n\n  - name: bucket\n    value: a.b\n",
        );
        let found = check_component(&c, NOW);
        // The annotations come before the store checks in the reconciler.
        assert_eq!(reasons(&found), ["UnknownAnnotation", "InvalidBucketName"]);
        assert!(
            found.problems[0].message.contains("did you mean"),
            "{found:?}"
        );

        let c = component(
            "metadata:\n  annotations:\n    jetstreamkv.io/history: many\nspec:\n  type: \
             state.jetstream\n  version: v2\n  metadata: []\n",
        );
        // A version Dapr does not accept stops the metadata checks, as in the reconciler.
        assert_eq!(
            reasons(&check_component(&c, NOW)),
            ["UnsupportedVersion", "InvalidAnnotation"]
        );
    }

    #[test]
    fn secret_references_are_present_but_unknown() {
        let c = component(
            "spec:\n  type: state.jetstream\n  version: v1\n  metadata:\n  - name: natsURL\n    \
             secretKeyRef: {name: nats, key: url}\n  - name: bucket\n    secretKeyRef: {name: \
             b}\n  - name: jwt\n    secretKeyRef: {name: creds, key: jwt}\n  - name: seedKey\n    \
             secretKeyRef: {name: creds, key: seed}\n",
        );
        let found = check_component(&c, NOW);
        assert!(found.problems.is_empty(), "{found:?}");
        assert_eq!(found.notes.len(), 5, "{found:#?}");
        assert!(found.notes[0].contains("\"natsURL\"") && found.notes[0].contains("\"url\""));
        assert!(
            found.notes[1].contains("key \"b\" of Secret \"b\""),
            "key defaults to name"
        );
        assert!(found.notes[4].contains("only the operator checks them"));

        // A Secret-backed jwt does not hide a missing seedKey.
        let c = component(
            "spec:\n  type: state.jetstream\n  metadata:\n  - name: natsURL\n    value: n:4222\n  \
             - name: bucket\n    value: b\n  - name: jwt\n    secretKeyRef: {name: creds}\n",
        );
        assert_eq!(reasons(&check_component(&c, NOW)), ["JwtWithoutSeed"]);
    }

    #[test]
    fn rules_that_need_no_value_still_apply_to_secret_references() {
        let c = component(
            "auth:\n  secretStore: vault\nspec:\n  type: state.jetstream\n  version: v1\n  \
             metadata:\n  - name: natsURL\n    secretKeyRef: {name: nats}\n",
        );
        assert_eq!(
            reasons(&check_component(&c, NOW)),
            ["SecretStoreUnsupported"]
        );
        let c = component(
            "spec:\n  type: state.jetstream\n  metadata:\n  - name: natsURL\n    envRef: URL\n",
        );
        assert_eq!(reasons(&check_component(&c, NOW)), ["EnvRefUnsupported"]);
    }

    #[test]
    fn inline_credentials_are_checked_and_never_shown() {
        let (token, seed) = creds(Some(NOW - 60));
        let yaml = format!(
            "spec:\n  type: state.jetstream\n  metadata:\n  - name: natsURL\n    value: \
             nats://u:hunter2pass@n:4222\n  - name: bucket\n    value: a.b\n  - name: jwt\n    \
             value: {token}\n  - name: seedKey\n    value: {seed}\n"
        );
        let found = check_component(&component(&yaml), NOW);
        // A bad bucket name does not hide the expired JWT.
        assert_eq!(reasons(&found), ["InvalidBucketName", "JwtExpired"]);
        let text = format!("{found:?}");
        for secret in [token.as_str(), seed.as_str(), "hunter2pass"] {
            assert!(!text.contains(secret), "leaked in {text}");
        }

        let (token, seed) = creds(None);
        let yaml = yaml
            .replace("a.b", "orders")
            .replace(&*creds(Some(NOW - 60)).0, "")
            .lines()
            .map(|l| {
                if l.contains("eyJ") {
                    format!("    value: {token}")
                } else if l.contains("SU") {
                    format!("    value: {seed}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(reasons(&check_component(&component(&yaml), NOW)).is_empty());

        // A seed of another user.
        let (other, _) = creds(None);
        let yaml = yaml.replace(&token, &other);
        assert_eq!(
            reasons(&check_component(&component(&yaml), NOW)),
            ["SeedDoesNotMatchJwt"]
        );
    }

    #[test]
    fn documents_are_split_at_markers_with_their_lines() {
        let text = "# leading comment\n---\na: 1\n---\n\n# only a comment\n---\n# c\nb: |\n  x\n  \
                    ---not a marker\n...\n--- c: 3\n---\n";
        let docs = split_documents(text);
        let got: Vec<_> = docs.iter().map(|d| (d.index, d.line, d.text)).collect();
        assert_eq!(
            got,
            [
                (1, 3, "a: 1\n"),
                (2, 9, "b: |\n  x\n  ---not a marker\n"),
                (3, 13, " c: 3\n"),
            ]
        );
        assert_eq!(split_documents("x: 1").len(), 1);
        assert!(split_documents("").is_empty());
        assert!(split_documents("---\n---\n").is_empty());
    }

    #[test]
    fn yaml_errors_have_their_position_in_the_file_and_do_not_stop_the_check() {
        let bad_component = GOOD.replace("orders", "a.b");
        let text = format!("{GOOD}---\nkind: [unclosed\n---\n{bad_component}");
        let report = check(&text);
        assert_eq!(report.summary.documents, 3);
        assert_eq!(report.summary.components, 2);
        let got: Vec<_> = report
            .problems
            .iter()
            .map(|f| (f.document, f.line, f.column, f.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (2, 16, Some(1), INVALID_YAML),
                (3, 17, None, "InvalidBucketName"),
            ],
            "{report:#?}"
        );
        assert_eq!(
            report.problems[0].message,
            "not valid YAML: did not find expected ',' or ']' at line 16 column 1, while parsing \
             a flow sequence at line 15 column 7"
        );
        let rendered = render_text(&report);
        assert!(
            rendered.contains(
                "f.yaml:17: document 3: Component n/s: InvalidBucketName: bucket name \"a.b\""
            ),
            "{rendered}"
        );
    }

    #[test]
    fn other_kinds_and_other_component_types_pass_through() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  bucket: a.b\n---\n\
            apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: r}\nspec:\n  type: \
            state.redis\n  version: v1\n  metadata: [{name: redisHost, value: x}]\n---\n\
            apiVersion: example.com/v1\nkind: Component\nmetadata: {name: other}\nspec: 5\n";
        let report = check(text);
        assert!(report.ok, "{report:#?}");
        assert_eq!(
            (report.summary.documents, report.summary.components),
            (3, 0)
        );
    }

    #[test]
    fn unreadable_components_are_reported() {
        let report = check(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: x\nspec:\n  \
             metadata: {natsURL: n}\n",
        );
        assert_eq!(report.problems.len(), 1, "{report:#?}");
        assert_eq!(report.problems[0].reason, INVALID_COMPONENT);
        assert_eq!(report.problems[0].name.as_deref(), Some("x"));
    }

    #[test]
    fn summary_lines() {
        let mut report = check(GOOD);
        assert_eq!(
            summary_line(&report),
            "ok: 1 JetStream Component in 1 document (1 file), no problems"
        );
        report = check(&format!("{GOOD}---\n{}", GOOD.replace("orders", "")));
        assert_eq!(
            summary_line(&report),
            "1 problem: 2 JetStream Components in 2 documents (1 file)"
        );
    }

    #[test]
    fn yaml_error_lines_count_from_the_file() {
        assert_eq!(
            relocate("bad at line 3 column 4", 10),
            "bad at line 12 column 4"
        );
        assert_eq!(
            relocate("a at line 1 column 2, b at line 2 column 1", 5),
            "a at line 5 column 2, b at line 6 column 1"
        );
        assert_eq!(relocate("at line x at line 9", 5), "at line x at line 9");
        assert_eq!(relocate("bad", 5), "bad");
    }
}
