//! Commands that talk to a running agent over its local API: status, history, sync, events.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};

use crate::agent::status::{AgentStatus, Event, HistoryEntry, ProjectStatus};
use crate::api::client::AdminClient;
use crate::config::AgentConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's API socket (default: from the agent config, else <root>/agent.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this project.
    pub project: Option<String>,
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Apply even outside update windows.
    #[arg(long)]
    pub now: bool,
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep following new events.
    #[arg(short, long)]
    pub follow: bool,
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Output format: one line per event, or the agent's JSON lines.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

fn client(root: &Path, config: &AgentConfig, socket: Option<PathBuf>) -> AdminClient {
    AdminClient::new(socket.unwrap_or_else(|| config.socket_path(root)))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn status(root: &Path, config: &AgentConfig, args: StatusArgs) -> anyhow::Result<i32> {
    let client = client(root, config, args.socket);
    match args.format {
        // What the agent sent, including fields this CLI does not know.
        Format::Json => println!("{}", serde_json::to_string_pretty(&client.status_value()?)?),
        Format::Table => print!("{}", render_status(&client.status()?, now_secs())),
    }
    Ok(0)
}

pub fn history(root: &Path, config: &AgentConfig, args: HistoryArgs) -> anyhow::Result<i32> {
    let entries = client(root, config, args.socket).history(args.project.as_deref())?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Table => print!("{}", render_history(&entries, now_secs())),
    }
    Ok(0)
}

pub fn sync(root: &Path, config: &AgentConfig, args: SyncArgs) -> anyhow::Result<i32> {
    client(root, config, args.socket).sync(args.now)?;
    if args.now {
        println!("sync requested (now: update windows ignored)");
    } else {
        println!("sync requested");
    }
    Ok(0)
}

pub fn events(root: &Path, config: &AgentConfig, args: EventsArgs) -> anyhow::Result<i32> {
    let client = client(root, config, args.socket);
    let mut out = std::io::stdout().lock();
    let mut write_failed = false;
    client.events(args.follow, |event| {
        let line = match args.format {
            Format::Table => event_line(&event),
            Format::Json => serde_json::to_string(&event).unwrap_or_default(),
        };
        // A closed stdout (`| head`) ends the command quietly.
        let ok = writeln!(out, "{line}").and_then(|()| out.flush()).is_ok();
        write_failed |= !ok;
        ok
    })?;
    if args.follow && !write_failed {
        eprintln!("dockmaster: the agent closed the event stream");
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Columns separated by two spaces, each as wide as its widest cell; the last column is not
/// padded. Every line starts with `indent`.
/// Columns separated by two spaces, each as wide as its widest cell; the last column is not
/// padded.
pub(crate) fn table(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_string();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat(' ').take(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => one_line(s),
        _ => "-".into(),
    }
}

/// Errors can span lines; tables need one.
pub(crate) fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A git revision as `git log --oneline` shows it.
fn short_revision(r: Option<&str>) -> String {
    match r {
        Some(r) if !r.is_empty() => r.chars().take(10).collect(),
        _ => "-".into(),
    }
}

/// `sha256:0123456789ab`: enough to tell digests apart at a glance.
fn short_digest(d: Option<&str>) -> String {
    match d {
        Some(d) if !d.is_empty() => {
            let (algo, hex) = d.split_once(':').unwrap_or(("", d));
            let hex: String = hex.chars().take(12).collect();
            if algo.is_empty() {
                hex
            } else {
                format!("{algo}:{hex}")
            }
        }
        _ => "-".into(),
    }
}

pub(crate) fn duration_text(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn age(now: u64, at: Option<u64>) -> String {
    match at {
        None | Some(0) => "-".into(),
        Some(t) if t >= now => "just now".into(),
        Some(t) => format!("{} ago", duration_text(now - t)),
    }
}

/// The human `dockmaster status`.
pub fn render_status(s: &AgentStatus, now: u64) -> String {
    let mut out = String::new();
    let uptime = if s.started_at == 0 {
        String::new()
    } else {
        format!(", up {}", duration_text(now.saturating_sub(s.started_at)))
    };
    let readiness = if s.ready { "ready" } else { "not ready" };
    out.push_str(&format!(
        "agent {}{uptime}, {readiness}\n",
        or_dash(Some(&s.version))
    ));
    if !s.labels.is_empty() {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("labels {}\n", labels.join(" ")));
    }
    out.push('\n');
    if s.sources.is_empty() {
        out.push_str("no sources\n");
    } else {
        let mut rows = vec![
            ["SOURCE", "URL", "REFERENCE", "REVISION", "FETCHED", "ERROR"]
                .map(String::from)
                .to_vec(),
        ];
        for src in &s.sources {
            rows.push(vec![
                src.name.clone(),
                or_dash(Some(&src.url)),
                or_dash(Some(&src.reference)),
                short_revision(src.revision.as_deref()),
                age(now, src.last_fetch),
                or_dash(src.last_error.as_deref()),
            ]);
        }
        out.push_str(&table(&rows, ""));
    }
    if s.projects.is_empty() {
        out.push_str("\nno projects\n");
    }
    for p in &s.projects {
        out.push('\n');
        out.push_str(&render_project(p, now));
    }
    out
}

fn render_project(p: &ProjectStatus, now: u64) -> String {
    let mut out = format!("project {}", p.name);
    if !p.source.is_empty() || !p.path.is_empty() {
        out.push_str(&format!(" ({}:{})", or_dash(Some(&p.source)), p.path));
    }
    out.push('\n');
    let generation = p
        .generation
        .map_or_else(|| "-".to_string(), |g| g.to_string());
    out.push_str(&format!(
        "  state {}  revision {}  generation {generation}\n",
        or_dash(Some(&p.state)),
        short_revision(p.revision.as_deref()),
    ));
    if let Some(e) = &p.last_error {
        out.push_str(&format!(
            "  last error (revision {}, {}): {}\n",
            short_revision(e.revision.as_deref()),
            age(now, Some(e.at)),
            one_line(&e.reason)
        ));
    }
    for change in &p.pending {
        out.push_str(&format!("  pending: {}\n", one_line(change)));
    }
    if p.services.is_empty() {
        out.push_str("  no services\n");
        return out;
    }
    let mut rows = vec![[
        "SERVICE", "READY", "STATE", "HEALTH", "RESTARTS", "IMAGE", "DIGEST", "UPDATE",
    ]
    .map(String::from)
    .to_vec()];
    for svc in &p.services {
        rows.push(vec![
            svc.name.clone(),
            format!("{}/{}", svc.running, svc.desired),
            or_dash(Some(&svc.state)),
            or_dash(svc.health.as_deref()),
            svc.restarts.to_string(),
            or_dash(Some(&svc.image)),
            short_digest(svc.digest.as_deref()),
            svc.update
                .as_deref()
                .map_or_else(|| "-".to_string(), |u| short_digest(Some(u))),
        ]);
    }
    out.push_str(&table(&rows, "  "));
    out
}

/// The human `dockmaster history`.
pub fn render_history(entries: &[HistoryEntry], now: u64) -> String {
    if entries.is_empty() {
        return "no generations\n".into();
    }
    let mut rows = vec![[
        "PROJECT",
        "GENERATION",
        "REVISION",
        "STATUS",
        "AGE",
        "ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for e in entries {
        rows.push(vec![
            e.project.clone(),
            e.generation.to_string(),
            short_revision(e.revision.as_deref()),
            or_dash(Some(&e.status)),
            age(now, Some(e.at)),
            or_dash(e.error.as_deref()),
        ]);
    }
    table(&rows, "")
}

/// `2024-05-01T12:00:00.123Z  apply  web  message`.
pub fn event_line(e: &Event) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(e.at_ms);
    let subject = e.project.as_deref().or(e.source.as_deref());
    format!(
        "{}  {}  {}  {}",
        crate::runtime::logs::format_rfc3339_nano(at),
        or_dash(Some(&e.kind)),
        or_dash(subject),
        one_line(&e.message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::status::{ErrorRecord, ServiceStatus, SourceStatus};

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn status_table_shows_sources_projects_and_services() {
        let s = AgentStatus {
            version: "0.1.0".into(),
            started_at: NOW - 3725,
            ready: true,
            labels: [("site".to_string(), "berlin".to_string())].into(),
            sources: vec![SourceStatus {
                name: "infra".into(),
                url: "https://git.example/infra.git".into(),
                reference: "branch main".into(),
                revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
                last_fetch: Some(NOW - 12),
                last_error: Some("fetch failed:\n  timed out".into()),
            }],
            projects: vec![ProjectStatus {
                name: "web".into(),
                source: "infra".into(),
                path: "apps/web".into(),
                revision: Some("0123456789abcdef".into()),
                generation: Some(7),
                state: "failed".into(),
                last_error: Some(ErrorRecord {
                    revision: Some("fedcba9876543210".into()),
                    reason: "health gate failed".into(),
                    at: NOW - 300,
                }),
                pending: vec!["recreate web (image changed)".into()],
                services: vec![ServiceStatus {
                    name: "web".into(),
                    image: "nginx:1.27".into(),
                    digest: Some(format!("sha256:{}", "ab".repeat(32))),
                    desired: 2,
                    running: 1,
                    state: "restarting".into(),
                    health: Some("unhealthy".into()),
                    restarts: 4,
                    update: Some(format!("sha256:{}", "cd".repeat(32))),
                }],
            }],
        };
        let text = render_status(&s, NOW);
        let expected = "\
agent 0.1.0, up 1h2m, ready
labels site=berlin

SOURCE  URL                            REFERENCE    REVISION    FETCHED  ERROR
infra   https://git.example/infra.git  branch main  0123456789  12s ago  fetch failed:; timed out

project web (infra:apps/web)
  state failed  revision 0123456789  generation 7
  last error (revision fedcba9876, 5m ago): health gate failed
  pending: recreate web (image changed)
  SERVICE  READY  STATE       HEALTH     RESTARTS  IMAGE       DIGEST               UPDATE
  web      1/2    restarting  unhealthy  4         nginx:1.27  sha256:abababababab  sha256:cdcdcdcdcdcd
";
        assert_eq!(text, expected);
    }

    #[test]
    fn empty_status() {
        let text = render_status(&AgentStatus::default(), NOW);
        assert_eq!(text, "agent -, not ready\n\nno sources\n\nno projects\n");
    }

    #[test]
    fn history_table() {
        let entries = vec![
            HistoryEntry {
                project: "web".into(),
                generation: 3,
                revision: Some("abcdef0123456789".into()),
                status: "good".into(),
                error: None,
                at: NOW - 7200,
                images: Default::default(),
            },
            HistoryEntry {
                project: "web".into(),
                generation: 4,
                revision: None,
                status: "failed".into(),
                error: Some("image missing".into()),
                at: NOW - 90_000,
                images: Default::default(),
            },
        ];
        assert_eq!(
            render_history(&entries, NOW),
            "\
PROJECT  GENERATION  REVISION    STATUS  AGE       ERROR
web      3           abcdef0123  good    2h0m ago  -
web      4           -           failed  1d1h ago  image missing
"
        );
        assert_eq!(render_history(&[], NOW), "no generations\n");
    }

    #[test]
    fn event_lines() {
        let e = Event {
            at_ms: 1_714_564_800_123,
            kind: "apply".into(),
            source: Some("infra".into()),
            project: Some("web".into()),
            message: "applied generation 4".into(),
        };
        assert_eq!(
            event_line(&e),
            "2024-05-01T12:00:00.123Z  apply  web  applied generation 4"
        );
        let e = Event { project: None, ..e };
        assert!(event_line(&e).contains("  apply  infra  "));
    }

    #[test]
    fn ages_and_digests() {
        assert_eq!(age(NOW, None), "-");
        assert_eq!(age(NOW, Some(NOW + 5)), "just now");
        assert_eq!(age(NOW, Some(NOW - 59)), "59s ago");
        assert_eq!(age(NOW, Some(NOW - 60)), "1m ago");
        assert_eq!(
            short_digest(Some("sha256:0123456789abcdef")),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest(Some("0123456789abcdef")), "0123456789ab");
        assert_eq!(short_digest(None), "-");
    }
}
