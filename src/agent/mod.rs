//! The GitOps agent (`dockmaster agent`): follows git sources, converges the host to them and
//! keeps it there; publishes status, events and metrics.
//!
//! Threads: the reconcile worker (one std thread, the single writer: [`worker`]) and a
//! current-thread tokio runtime on the main thread for the HTTP listeners, signals and the
//! systemd watchdog. The runtime never touches containers; the worker never blocks it.

pub mod images;
pub mod notify;
pub mod state;
pub mod status;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::api::{self, AdminSocket, EventHub, WebhookSecrets};
use crate::config::AgentConfig;
use crate::metrics::{Metrics, WebhookResult};
use crate::reconcile::generations;

use status::{AgentStatus, HistoryEntry, Trigger};
use worker::{Msg, Publish, Worker};

/// The default address of /metrics, /healthz, /readyz and /hooks/git.
pub const DEFAULT_HTTP: &str = "127.0.0.1:9469";

fn secret(inline: &Option<String>, file: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    if let Some(s) = inline {
        return Ok(Some(s.clone()));
    }
    match file {
        Some(f) => Ok(Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("read {}", f.display()))?
                .trim()
                .to_string(),
        )),
        None => Ok(None),
    }
}

/// Every generation of every project the agent knows (or of one), newest first.
fn history(root: &Path, project: Option<&str>) -> Vec<HistoryEntry> {
    let projects: Vec<String> = match project {
        Some(p) => vec![p.to_string()],
        None => std::fs::read_dir(root.join("projects"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut out = Vec::new();
    for p in projects {
        for g in generations::list(root, &p).unwrap_or_default() {
            let images = g
                .project
                .get("services")
                .and_then(|s| s.as_object())
                .map(|services| {
                    services
                        .iter()
                        .filter_map(|(name, s)| {
                            Some((name.clone(), s.get("image")?.as_str()?.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(HistoryEntry {
                project: p.clone(),
                generation: g.number,
                revision: g.revision.clone(),
                status: match g.status {
                    generations::Status::Applying => "applying",
                    generations::Status::Good => "good",
                    generations::Status::Failed => "failed",
                }
                .to_string(),
                error: g.error.clone(),
                at: g
                    .created
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                images,
            });
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse((e.at, e.generation)));
    out
}

/// Runs the agent until SIGTERM/SIGINT. Containers are never stopped by it.
pub fn run(
    root: PathBuf,
    config_path: Option<PathBuf>,
    config: AgentConfig,
) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    crate::source::configure_timeouts();
    let metrics = Arc::new(Metrics::new(&root, env!("CARGO_PKG_VERSION")));
    let (status_tx, status_rx) = watch::channel(AgentStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        labels: config.labels.clone(),
        ..AgentStatus::default()
    });
    let events = EventHub::new(200, 256);
    let (trigger_tx, mut trigger_rx) = mpsc::channel::<Trigger>(8);
    let (msg_tx, msg_rx) = std::sync::mpsc::channel::<Msg>();

    let webhook = WebhookSecrets {
        secret: secret(&config.webhook.secret, &config.webhook.secret_file)?,
        gitlab_token: secret(
            &config.webhook.gitlab_token,
            &config.webhook.gitlab_token_file,
        )?,
    };
    let api_token = secret(&None, &config.listen.api_token_file)?;
    let (jobs, jobs_thread) = crate::jobs::worker::spawn(
        &root,
        Arc::new(config.clone()),
        Some(metrics.clone()),
        Arc::new(crate::schedule::SystemClock),
        Some({
            let events = events.clone();
            Box::new(
                move |project: &str, service: &str, _problem: bool, message: String| {
                    events.publish(status::Event {
                        at_ms: worker::unix_ms(),
                        kind: "job".into(),
                        source: None,
                        project: Some(project.to_string()),
                        message: format!("job {service}: {message}"),
                    })
                },
            )
        }),
    )
    .context("start the jobs thread")?;
    let state = {
        let root = root.clone();
        let m = metrics.clone();
        let m2 = metrics.clone();
        api::server::ApiState {
            status: status_rx.clone(),
            history: Arc::new(move |p| history(&root, p)),
            triggers: trigger_tx.clone(),
            events: events.clone(),
            metrics: Arc::new(move || m.encode()),
            webhook,
            api_token,
            on_webhook: Arc::new(move |result: &str| {
                let r = WebhookResult::ALL
                    .into_iter()
                    .find(|r| r.as_str() == result)
                    .unwrap_or(WebhookResult::BadRequest);
                m2.webhook_request(r);
            }),
            jobs: Some(Arc::new(jobs.clone())),
        }
    };

    let worker = Worker::new(
        root.clone(),
        config.clone(),
        Publish {
            status: status_tx,
            events: events.clone(),
            metrics: metrics.clone(),
            jobs: Some(jobs.clone()),
        },
    );
    let worker_thread = std::thread::Builder::new()
        .name("reconcile".into())
        .spawn(move || worker.run(msg_rx))
        .context("start the reconcile thread")?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let code = rt.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut servers = Vec::new();
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let http = config
            .listen
            .http
            .clone()
            .unwrap_or_else(|| DEFAULT_HTTP.to_string());
        if !http.is_empty() {
            let listener = tokio::net::TcpListener::bind(&http)
                .await
                .with_context(|| format!("listen on {http}"))?;
            tracing::info!("serving /metrics, /healthz, /readyz, /hooks/git on {http}");
            servers.push(tokio::spawn(api::serve_public(listener, state.clone(), stopped(stop_rx.clone()))));
        }
        let socket_path = config.socket_path(&root);
        let socket = AdminSocket::bind(&socket_path)
            .with_context(|| format!("listen on {}", socket_path.display()))?;
        servers.push(tokio::spawn(api::serve_admin_unix(socket, state.clone(), stopped(stop_rx.clone()))));
        if let Some(addr) = config.listen.api.clone().filter(|a| !a.is_empty()) {
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("listen on {addr}"))?;
            servers.push(tokio::spawn(api::serve_admin_tcp(listener, state.clone(), stopped(stop_rx.clone()))));
        }
        // Triggers from the API to the worker's channel.
        {
            let msg_tx = msg_tx.clone();
            tokio::spawn(async move {
                while let Some(t) = trigger_rx.recv().await {
                    if msg_tx.send(Msg::Trigger(t)).is_err() {
                        break;
                    }
                }
            });
        }
        // systemd's readiness: the listeners are up and state is loaded. Convergence can
        // take minutes (pulls, health gates) and has its own signal (`/readyz`).
        notify::notify("READY=1");
        if let Some(interval) = notify::watchdog_interval() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                loop {
                    tick.tick().await;
                    notify::notify("WATCHDOG=1");
                }
            });
        }
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    match AgentConfig::load(config_path.as_deref()) {
                        Ok(c) => {
                            jobs.set_config(Arc::new(c.clone()));
                            let _ = msg_tx.send(Msg::Reload(Box::new(c)));
                        }
                        Err(e) => {
                            tracing::error!("configuration not reloaded: {e}");
                            events.publish(status::Event {
                                at_ms: 0,
                                kind: "error".into(),
                                source: None,
                                project: None,
                                message: format!("configuration not reloaded (the old one stays): {e}"),
                            });
                        }
                    }
                }
            }
        }
        notify::notify("STOPPING=1");
        tracing::info!("stopping the agent (containers keep running)");
        let _ = stop_tx.send(true);
        let _ = msg_tx.send(Msg::Stop);
        jobs.stop();
        // Let the listeners finish open requests and remove the socket file (each gives
        // its connections a few seconds).
        for server in servers {
            if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(7), server).await {
                tracing::warn!("listener: {e}");
            }
        }
        anyhow::Ok(0)
    })?;
    // The worker finishes its current step (a step never takes longer than the apply
    // timeout); an apply cut short by the process exit is repaired by the next start.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !(worker_thread.is_finished() && jobs_thread.is_finished())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(code)
}
