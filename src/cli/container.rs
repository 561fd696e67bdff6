//! Container commands: run, ps, logs, stop, kill, rm, exec, inspect (Docker's verbs and
//! flags), and the hidden `shim` the runtime re-executes itself as.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::json;

use crate::config::AgentConfig;
use crate::health::{HealthConfig, RestartPolicy};
use crate::image::ImageStore;
use crate::network::manager::NetworkRequest;
use crate::network::model::DEFAULT_NETWORK;
use crate::network::ports::PortSpec;
use crate::network::sandbox::{ContainerNetwork, NetMode};
use crate::runtime::container::{
    observe, ContainerPaths, ContainerRecord, ContainerStore, Observed,
};
use crate::runtime::create::{create_supervised, CreateRequest, Supervision};
use crate::runtime::lifecycle;
use crate::runtime::logs::{format_rfc3339_nano, LogConfig, LogReader, Stream};
use crate::runtime::protocol::{Client, ExecRequest};
use crate::runtime::shim;
use crate::runtime::signal::parse_signal;
use crate::runtime::spec::{
    options::parse_size, BindMount, ContainerOptions, InitProcess, SecurityOpt, TmpfsMount, Ulimit,
};

/// Docker's exit codes for failures of the run command itself.
const EXIT_RUN_FAILED: i32 = 125;
const EXIT_CANNOT_INVOKE: i32 = 126;
const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name (unique).
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable KEY=VALUE (KEY alone takes it from this environment).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines).
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Bind mount SRC:DST[:ro|rw] (SRC an absolute host path).
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// tmpfs mount DST[:OPTIONS].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Memory limit (e.g. 64m).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Memory soft limit.
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    /// CPUs (fractional: quota per period).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// User: name, uid, uid:gid or name:group.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Supplementary group.
    #[arg(long = "group-add")]
    pub group_add: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Mount the root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// seccomp=unconfined, no-new-privileges[:true|false].
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Run an init as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    pub init: bool,
    /// A network name (bridge mode; repeat to join several), none, host or container:NAME.
    /// Default: the `bridge` network, as in Docker.
    #[arg(long = "network", alias = "net")]
    pub network: Vec<String>,
    /// Extra DNS names of the container on its (first) network.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// Publish a port: [HOST_IP:][HOST_PORT[-RANGE]:]CONTAINER_PORT[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Static IPv4 address on the (first) network.
    #[arg(long = "ip")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Upstream DNS servers for names that are not the network's.
    #[arg(long = "dns")]
    pub dns: Vec<std::net::Ipv4Addr>,
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    #[arg(long = "dns-option")]
    pub dns_option: Vec<String>,
    /// HOST:IP entries for /etc/hosts.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Override the image's entrypoint ("" resets it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// ulimit NAME=SOFT[:HARD].
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Namespaced kernel parameter KEY=VALUE.
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Give the container every capability and device (use with care).
    #[arg(long)]
    pub privileged: bool,
    /// Size of /dev/shm.
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Signal `stop` sends first.
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL.
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<u64>,
    /// Log options: max-size=SIZE, max-file=N.
    #[arg(long = "log-opt")]
    pub log_opt: Vec<String>,
    /// Label KEY=VALUE.
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Restart policy when the container exits: no, always, on-failure[:max-retries] or
    /// unless-stopped (the shim restarts it with an exponential backoff).
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Command to run to check health (with /bin/sh -c); replaces the image's HEALTHCHECK
    /// command.
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 30s).
    #[arg(long = "health-interval", allow_hyphen_values = true)]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 30s).
    #[arg(long = "health-timeout", allow_hyphen_values = true)]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy (default 3).
    #[arg(long = "health-retries", allow_hyphen_values = true)]
    pub health_retries: Option<String>,
    /// Start period for the container to initialize before failures count (ms|s|m|h)
    /// (default 0s).
    #[arg(long = "health-start-period", allow_hyphen_values = true)]
    pub health_start_period: Option<String>,
    /// Time between checks during the start period (ms|s|m|h) (default 5s).
    #[arg(long = "health-start-interval", allow_hyphen_values = true)]
    pub health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Do not restart the container when its healthcheck reports it unhealthy (dockmaster
    /// restarts unhealthy containers by default; Docker does not).
    #[arg(long = "no-restart-unhealthy")]
    pub no_restart_unhealthy: bool,
    /// Image to run (pulled when missing).
    pub image: String,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate ids and commands.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// `table` (default) or `json` (one object per line).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Only the containers of this Compose project.
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the log until the container stops.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines ("all" for everything).
    #[arg(long, default_value = "all")]
    pub tail: String,
    /// Prefix each line with its timestamp.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// A container, or with SERVICE: a Compose project.
    pub container: String,
    /// `logs PROJECT SERVICE`: every replica of the service, each line prefixed with the
    /// container's name when there are several.
    pub service: Option<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing (default: the container's stop timeout, 10).
    #[arg(short = 't', long = "time", visible_alias = "timeout")]
    pub time: Option<u64>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send.
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill and remove running containers.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin attached.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// User: name, uid, uid:gid or name:group.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Environment variable KEY=VALUE.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShimArgs {
    /// Copy the container's output to the launcher (foreground `run`).
    #[arg(long)]
    pub attach: bool,
    pub id: String,
}

pub fn shim(root: &Path, args: ShimArgs) -> i32 {
    shim::main(shim::ShimOptions {
        root: root.to_path_buf(),
        id: args.id,
        attach: args.attach,
    })
}

// ---- run ---------------------------------------------------------------------------------

pub fn run(root: &Path, config: &AgentConfig, args: RunArgs) -> anyhow::Result<i32> {
    match run_inner(root, config, args) {
        Ok(code) => Ok(code),
        Err(RunFailure(code, e)) => {
            eprintln!("dockmaster: {e:#}");
            Ok(code)
        }
    }
}

struct RunFailure(i32, anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for RunFailure {
    fn from(e: E) -> Self {
        RunFailure(EXIT_RUN_FAILED, e.into())
    }
}

fn run_inner(root: &Path, config: &AgentConfig, args: RunArgs) -> Result<i32, RunFailure> {
    // Flags first: a typo must not cost a pull.
    let supervision = supervision(&args)?;
    let images = ImageStore::open(root)?;
    if images.find(&args.image).is_err() {
        super::image::pull_for_run(root, config, &args.image)?;
    }
    let request = create_request(root, &args)?;
    let (record, paths) = create_supervised(root, request, supervision)?;
    let attach = !args.detach;
    let launched = match shim::spawn(root, &record.id, &paths, attach) {
        Ok(l) => l,
        Err(e) => {
            let code = match e.start_failure() {
                Some(shim::StartFailure::NotFound) => EXIT_NOT_FOUND,
                Some(shim::StartFailure::CannotInvoke) => EXIT_CANNOT_INVOKE,
                _ => EXIT_RUN_FAILED,
            };
            // A shim that reported has already cleaned up (and removed an `--rm` container);
            // one that never started left only the directory.
            if args.rm && matches!(e, shim::LaunchError::Spawn { .. }) {
                let _ = ContainerStore::new(root).remove(&record.id);
            }
            return Err(RunFailure(code, e.into()));
        }
    };
    if args.detach {
        println!("{}", record.id);
        return Ok(0);
    }
    let _forwarder = SignalForwarder::start(paths.socket());
    let code = launched.wait_exit();
    match code {
        Some(code) => Ok(code),
        None => {
            let observed = observe(&paths, &record);
            match observed {
                Observed::Exited(e) => Ok(e.exit_code),
                other => Err(RunFailure(
                    EXIT_RUN_FAILED,
                    anyhow!(
                        "container {}: lost track of it ({})",
                        record.name,
                        other.status_word()
                    ),
                )),
            }
        }
    }
}

/// Forwards SIGINT, SIGTERM and SIGHUP received by a foreground `run` to the container, as
/// `docker run` does (its --sig-proxy default).
struct SignalForwarder;

impl SignalForwarder {
    fn start(socket: PathBuf) -> SignalForwarder {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            set.add(s);
        }
        // Blocked in this thread (and the waiter thread inherits it); the shim was already
        // started, so no child inherits the mask.
        if set.thread_block().is_err() {
            return SignalForwarder;
        }
        std::thread::spawn(move || loop {
            let Ok(sig) = set.wait() else { return };
            if let Ok(mut c) = Client::connect(&socket, Duration::from_secs(5)) {
                let _ = c.signal(sig as i32);
            }
        });
        SignalForwarder
    }
}

fn create_request(root: &Path, args: &RunArgs) -> anyhow::Result<CreateRequest> {
    let mut options = ContainerOptions {
        command: args.command.clone(),
        entrypoint: args.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        env: args
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some(_) => e.clone(),
                // Docker: a bare KEY takes this process's value, or unsets it.
                None => match std::env::var(e) {
                    Ok(v) => format!("{e}={v}"),
                    Err(_) => e.clone(),
                },
            })
            .collect(),
        user: args.user.clone(),
        group_add: args.group_add.clone(),
        working_dir: args.workdir.clone(),
        hostname: args.hostname.clone(),
        read_only: args.read_only,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        privileged: args.privileged,
        cpus: args.cpus,
        cpu_shares: args.cpu_shares,
        pids_limit: args.pids_limit,
        ..ContainerOptions::default()
    };
    for file in &args.env_file {
        options.env_files.extend(read_env_file(file)?);
    }
    for v in &args.volume {
        options.binds.push(BindMount::parse(v)?);
    }
    for t in &args.tmpfs {
        options.tmpfs.push(TmpfsMount::parse(t)?);
    }
    for s in &args.security_opt {
        options.security_opts.push(SecurityOpt::parse(s)?);
    }
    for u in &args.ulimit {
        options.ulimits.push(Ulimit::parse(u)?);
    }
    for s in &args.sysctl {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid --sysctl {s:?}: expected KEY=VALUE"))?;
        options.sysctls.insert(k.to_string(), v.to_string());
    }
    let size = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<u64>> {
        v.as_deref()
            .map(|s| parse_size(s).ok_or_else(|| anyhow!("invalid --{flag} {s:?}")))
            .transpose()
    };
    options.memory = size("memory", &args.memory)?;
    options.memory_reservation = size("memory-reservation", &args.memory_reservation)?;
    options.shm_size = size("shm-size", &args.shm_size)?;
    let network = container_network(args)?;
    if args.init {
        let init = crate::runtime::init::install_static_init(root)
            .with_context(|| format!("install the container init under {}", root.display()))?;
        options.init = Some(InitProcess::new(init));
    }
    let mut labels = BTreeMap::new();
    for l in &args.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let mut log = LogConfig::default();
    for opt in &args.log_opt {
        match opt.split_once('=') {
            Some(("max-size", v)) => {
                log.max_size = parse_size(v).ok_or_else(|| anyhow!("invalid max-size {v:?}"))?
            }
            Some(("max-file", v)) => {
                log.max_files = v.parse().map_err(|_| anyhow!("invalid max-file {v:?}"))?
            }
            _ => bail!("unsupported --log-opt {opt:?}: use max-size=SIZE or max-file=N"),
        }
    }
    Ok(CreateRequest {
        image: args.image.clone(),
        name: args.name.clone(),
        options,
        auto_remove: args.rm,
        stop_grace_secs: args.stop_timeout,
        stop_signal: args.stop_signal.clone(),
        labels,
        log,
        network,
    })
}

/// `--restart`, `--health-*`, `--no-healthcheck` and `--no-restart-unhealthy`, checked.
fn supervision(args: &RunArgs) -> anyhow::Result<Supervision> {
    let restart = RestartPolicy::parse(&args.restart)
        .map_err(|e| anyhow!("invalid --restart {:?}: {e}", args.restart))?;
    if args.rm && !restart.is_no() {
        bail!(
            "conflicting options: --restart {restart} and --rm (a removed container cannot \
             be restarted)"
        );
    }
    Ok(Supervision {
        restart,
        healthcheck: healthcheck_flags(args)?,
        restart_unhealthy: !args.no_restart_unhealthy,
    })
}

/// `--health-*` and `--no-healthcheck` as Docker's CLI reads them: `None` when none is given
/// (the image's HEALTHCHECK applies as it is); fields left unset inherit the image's.
fn healthcheck_flags(args: &RunArgs) -> anyhow::Result<Option<HealthConfig>> {
    let duration = |flag: &str, value: &Option<String>| -> anyhow::Result<Duration> {
        let Some(v) = value else {
            return Ok(Duration::ZERO);
        };
        if v.trim_start().starts_with('-') {
            bail!("invalid --{flag} {v:?}: it cannot be negative");
        }
        let d = crate::manifest::syntax::parse_duration(v.trim())
            .map_err(|e| anyhow!("invalid --{flag} {v:?}: {e}"))?;
        if !d.is_zero() && d < crate::health::MIN_DURATION {
            bail!("invalid --{flag} {v:?}: it must be 0 (the default) or at least 1ms");
        }
        Ok(d)
    };
    let interval = duration("health-interval", &args.health_interval)?;
    let timeout = duration("health-timeout", &args.health_timeout)?;
    let start_period = duration("health-start-period", &args.health_start_period)?;
    let start_interval = duration("health-start-interval", &args.health_start_interval)?;
    let retries = match &args.health_retries {
        None => 0,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n < 0 => bail!("invalid --health-retries {v:?}: it cannot be negative"),
            Ok(n) => u32::try_from(n)
                .map_err(|_| anyhow!("invalid --health-retries {v:?}: too large"))?,
            Err(_) => bail!("invalid --health-retries {v:?}: not a whole number"),
        },
    };
    let cmd = args.health_cmd.as_deref().filter(|c| !c.is_empty());
    let any = cmd.is_some()
        || !interval.is_zero()
        || !timeout.is_zero()
        || !start_period.is_zero()
        || !start_interval.is_zero()
        || retries != 0;
    if args.no_healthcheck {
        if any {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(Some(HealthConfig::disabled()));
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(HealthConfig {
        test: cmd
            .map(|c| vec!["CMD-SHELL".to_string(), c.to_string()])
            .unwrap_or_default(),
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}

/// `--network` and friends, checked: modes cannot be mixed, ports need a bridge network,
/// aliases and --ip apply to the first network (as `docker run` does).
fn container_network(args: &RunArgs) -> anyhow::Result<ContainerNetwork> {
    let mut net = ContainerNetwork::default();
    let values: Vec<&str> = if args.network.is_empty() {
        vec![DEFAULT_NETWORK]
    } else {
        args.network.iter().map(String::as_str).collect()
    };
    for (i, value) in values.iter().enumerate() {
        let (mode, name) = NetMode::parse(value);
        if mode != NetMode::Bridge && values.len() > 1 {
            bail!("--network {value} cannot be combined with other networks");
        }
        net.mode = mode;
        if let Some(name) = name {
            net.networks.push(NetworkRequest {
                network: name,
                aliases: if i == 0 {
                    args.network_alias.clone()
                } else {
                    Vec::new()
                },
                ip: if i == 0 { args.ip } else { None },
            });
        }
    }
    if net.mode != NetMode::Bridge {
        if !args.publish.is_empty() {
            bail!(
                "-p/--publish needs a bridge network, not --network {}",
                values[0]
            );
        }
        if !args.network_alias.is_empty() || args.ip.is_some() {
            bail!(
                "--network-alias and --ip need a bridge network, not --network {}",
                values[0]
            );
        }
    }
    for p in &args.publish {
        PortSpec::parse(p).map_err(|e| anyhow!("-p {p}: {e}"))?;
    }
    net.ports = args.publish.clone();
    net.dns = args.dns.clone();
    net.dns_search = args.dns_search.clone();
    net.dns_options = args.dns_option.clone();
    for h in &args.add_host {
        let (name, ip) = h
            .rsplit_once(':')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| anyhow!("invalid --add-host {h:?}: expected HOST:IP"))?;
        let ip = ip
            .parse()
            .map_err(|_| anyhow!("invalid --add-host {h:?}: {ip:?} is not an IPv4 address"))?;
        net.extra_hosts.push((name.to_string(), ip));
    }
    Ok(net)
}

/// Docker's env-file format: KEY=VALUE lines, `#` comments, blank lines ignored; a bare KEY
/// takes this process's value (dropped when unset).
fn read_env_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read env file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, _)) if k.is_empty() || k.contains(char::is_whitespace) => {
                bail!("{}:{}: invalid variable name {k:?}", path.display(), i + 1)
            }
            Some(_) => out.push(line.to_string()),
            None => {
                if let Ok(v) = std::env::var(line.trim()) {
                    out.push(format!("{}={v}", line.trim()));
                }
            }
        }
    }
    Ok(out)
}

// ---- ps / inspect ------------------------------------------------------------------------

pub fn ps(root: &Path, args: PsArgs) -> anyhow::Result<i32> {
    let store = ContainerStore::new(root);
    let mut rows = Vec::new();
    for record in store.list()?.into_iter().rev() {
        let observed = observe(&store.paths(&record.id), &record);
        if !args.all && !observed.is_running() {
            continue;
        }
        rows.push((record, observed));
    }
    // Grouped by project and service (replicas in order); other containers after them,
    // newest first as before.
    let label = |r: &ContainerRecord, k: &str| r.labels.get(k).cloned();
    use crate::reconcile::translate::{LABEL_NUMBER, LABEL_PROJECT, LABEL_SERVICE};
    if let Some(p) = &args.project {
        rows.retain(|(r, _)| label(r, LABEL_PROJECT).as_ref() == Some(p));
    }
    rows.sort_by_key(|(r, _)| {
        let number: u32 = label(r, LABEL_NUMBER)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (
            label(r, LABEL_PROJECT).is_none(),
            label(r, LABEL_PROJECT),
            label(r, LABEL_SERVICE),
            number,
        )
    });
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for (r, _) in &rows {
            writeln!(out, "{}", if args.no_trunc { &r.id } else { &r.id[..12] })?;
        }
        return Ok(0);
    }
    if args.format == "json" {
        for (r, o) in &rows {
            let line = json!({
                "ID": r.id,
                "Names": r.name,
                "Image": r.image,
                "Command": r.command.join(" "),
                "CreatedAt": format_rfc3339_nano(r.created),
                "State": o.status_word(),
                "Status": status_text(o),
                "Project": label(r, LABEL_PROJECT).unwrap_or_default(),
                "Service": label(r, LABEL_SERVICE).unwrap_or_default(),
                "Health": match o {
                    Observed::Live(s) => s.health.as_ref().map_or("", |h| h.status.as_str()),
                    _ => "",
                },
            });
            writeln!(out, "{line}")?;
        }
        return Ok(0);
    }
    if args.format != "table" {
        bail!("unknown --format {:?}: use table or json", args.format);
    }
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|(r, o)| {
            let mut command = format!("\"{}\"", r.command.join(" "));
            if !args.no_trunc && command.chars().count() > 22 {
                command = command.chars().take(20).collect::<String>() + "…\"";
            }
            let id = if args.no_trunc {
                &r.id[..]
            } else {
                &r.id[..12]
            };
            [
                id.to_string(),
                r.image.clone(),
                command,
                ago(r.created),
                status_text(o),
                r.name.clone(),
                label(r, LABEL_PROJECT).unwrap_or_default(),
                label(r, LABEL_SERVICE).unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
        "PROJECT",
        "SERVICE",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(0)
}

fn ago(t: SystemTime) -> String {
    format!(
        "{} ago",
        human_duration(SystemTime::now().duration_since(t).unwrap_or_default())
    )
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// Docker's STATUS column.
fn status_text(o: &Observed) -> String {
    match o {
        Observed::Live(s) => match s.status {
            crate::runtime::protocol::Status::Created => "Created".into(),
            crate::runtime::protocol::Status::Running => {
                let up = match s.started_at {
                    Some(t) => format!(
                        "Up {}",
                        human_duration(SystemTime::now().duration_since(t).unwrap_or_default())
                    ),
                    None => "Up".into(),
                };
                // Docker's `Up 5 seconds (healthy)`, `(health: starting)`.
                match s.health.as_ref().map(|h| h.status) {
                    Some(crate::health::HealthStatus::Starting) => {
                        format!("{up} (health: starting)")
                    }
                    Some(status) => format!("{up} ({status})"),
                    None => up,
                }
            }
            crate::runtime::protocol::Status::Stopped => {
                format!("Exited ({})", s.exit_code.unwrap_or(-1))
            }
            crate::runtime::protocol::Status::Restarting => format!(
                "Restarting ({}) {}",
                s.exit_code.unwrap_or(-1),
                s.finished_at.map_or_else(String::new, ago)
            ),
        },
        Observed::Exited(e) => format!("Exited ({}) {}", e.exit_code, ago(e.finished_at)),
        Observed::ShimLost { container_pids, .. } if !container_pids.is_empty() => format!(
            "Dead (shim gone, {} process(es) still running)",
            container_pids.len()
        ),
        Observed::ShimLost { .. } => "Dead (shim gone, no exit recorded)".into(),
        Observed::Unresponsive { .. } => "Unknown (shim not answering)".into(),
    }
}

pub fn inspect(root: &Path, args: InspectArgs) -> anyhow::Result<i32> {
    let store = ContainerStore::new(root);
    let mut out = Vec::new();
    let mut failed = false;
    for query in &args.containers {
        match store.resolve(query) {
            Ok(record) => {
                let paths = store.paths(&record.id);
                let mut v = inspect_json(&record, &paths, &observe(&paths, &record));
                v["NetworkSettings"] = network_settings(root, &record);
                out.push(v);
            }
            Err(e) => {
                eprintln!("dockmaster: {e}");
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if failed { 1 } else { 0 })
}

/// Docker's `NetworkSettings`: the container's endpoints while it runs (they are released
/// when it stops), its published ports, and the mode it asked for.
fn network_settings(root: &Path, r: &ContainerRecord) -> serde_json::Value {
    let store = crate::network::store::NetworkStore::open_existing(root);
    let endpoints = store
        .as_ref()
        .and_then(|s| s.endpoints_of(&r.id).ok())
        .unwrap_or_default();
    let networks = store
        .as_ref()
        .and_then(|s| s.list().ok())
        .unwrap_or_default();
    let mut nets = serde_json::Map::new();
    let mut ports = serde_json::Map::new();
    for e in &endpoints {
        let net = networks.iter().find(|n| n.name == e.network);
        nets.insert(
            e.network.clone(),
            serde_json::json!({
                "NetworkID": net.map(|n| n.id.clone()).unwrap_or_default(),
                "IPAddress": e.ip.to_string(),
                "IPPrefixLen": net.map(|n| n.subnet.prefix_len()).unwrap_or(0),
                "Gateway": net.map(|n| n.gateway.to_string()).unwrap_or_default(),
                "MacAddress": e.mac,
                "Aliases": e.aliases,
            }),
        );
        for p in &e.ports {
            let key = format!("{}/{}", p.container_port, p.proto);
            let entry = ports.entry(key).or_insert_with(|| serde_json::json!([]));
            if let Some(list) = entry.as_array_mut() {
                list.push(serde_json::json!({
                    "HostIp": p.host_ip.to_string(),
                    "HostPort": p.host_port.to_string(),
                }));
            }
        }
    }
    let mode = match r.network.as_ref().map(|n| &n.mode) {
        None | Some(NetMode::None) => "none".to_string(),
        Some(NetMode::Host) => "host".to_string(),
        Some(NetMode::Container(c)) => format!("container:{c}"),
        Some(NetMode::Bridge) => r
            .network
            .as_ref()
            .and_then(|n| n.networks.first())
            .map(|n| n.network.clone())
            .unwrap_or_default(),
    };
    serde_json::json!({ "NetworkMode": mode, "Networks": nets, "Ports": ports })
}

fn inspect_json(r: &ContainerRecord, paths: &ContainerPaths, o: &Observed) -> serde_json::Value {
    let time = |t: Option<SystemTime>| {
        t.map(format_rfc3339_nano)
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
    };
    let (pid, exit_code, oom, signal, started, finished, error) = match o {
        Observed::Live(s) => (
            s.pid.unwrap_or(0),
            s.exit_code.unwrap_or(0),
            s.oom_killed,
            s.signal,
            s.started_at,
            s.finished_at,
            String::new(),
        ),
        Observed::Exited(e) => (
            0,
            e.exit_code,
            e.oom_killed,
            e.signal,
            e.started_at,
            Some(e.finished_at),
            String::new(),
        ),
        Observed::ShimLost {
            shim_pid,
            container_pids,
        } => (
            container_pids.first().copied().unwrap_or(0),
            -1,
            false,
            None,
            None,
            None,
            format!(
                "shim {} is gone without recording an exit",
                shim_pid.map_or("?".into(), |p| p.to_string())
            ),
        ),
        Observed::Unresponsive { shim_pid, error } => (
            0,
            -1,
            false,
            None,
            None,
            None,
            format!("shim {shim_pid} does not answer: {error}"),
        ),
    };
    let (path, args) = r
        .command
        .split_first()
        .map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
    let restart_count = match o {
        Observed::Live(s) => s.restart_count,
        Observed::Exited(e) => e.restart_count,
        _ => 0,
    };
    let error = match o {
        Observed::Exited(e) => e.error.clone().unwrap_or(error),
        _ => error,
    };
    let mut v = json!({
        "Id": r.id,
        "Name": format!("/{}", r.name),
        "Created": format_rfc3339_nano(r.created),
        "Path": path,
        "Args": args,
        "State": {
            "Status": o.status_word(),
            "Running": o.is_running(),
            "Restarting": matches!(o, Observed::Live(s) if s.status == crate::runtime::protocol::Status::Restarting),
            "Dead": matches!(o, Observed::ShimLost { .. }),
            "OOMKilled": oom,
            "Pid": pid,
            "ExitCode": exit_code,
            "Signal": signal,
            "Error": error,
            "StartedAt": time(started),
            "FinishedAt": time(finished),
        },
        "Image": r.image_id,
        "ImageName": r.image,
        "LogPath": paths.log(),
        "RestartCount": restart_count,
        "HostConfig": {
            "AutoRemove": r.auto_remove,
            "RestartPolicy": {
                "Name": r.restart.name(),
                "MaximumRetryCount": r.restart.max_retries(),
            },
            // Ours (Docker has no such setting): an unhealthy container is restarted.
            "RestartUnhealthy": r.restart_unhealthy,
            "LogConfig": {"Type": "json-file", "Config": {
                "max-size": r.log_max_bytes.to_string(),
                "max-file": r.log_max_files.to_string(),
            }},
        },
        "Config": {
            "Image": r.image,
            "StopSignal": crate::runtime::signal::signal_name(r.stop_signal),
            "StopTimeout": r.stop_grace_secs,
            "Labels": r.labels,
            "Healthcheck": r.healthcheck,
        },
        "GraphDriver": {"Name": "overlay", "Data": {
            "MergedDir": paths.rootfs(),
            "UpperDir": paths.overlay().join("upper"),
            "WorkDir": paths.overlay().join("work"),
        }},
    });
    // Docker shows State.Health only for containers with a healthcheck: the shim's live
    // answer, else what it last wrote (a stopped container keeps its last results).
    if r.healthcheck.as_ref().is_some_and(|h| h.is_enabled()) {
        let health = match o {
            Observed::Live(s) => s.health.clone(),
            _ => None,
        }
        .or_else(|| {
            crate::health::HealthState::load(&paths.health())
                .ok()
                .flatten()
        });
        if let Some(h) = health {
            v["State"]["Health"] = json!(h);
        }
    }
    v
}

// ---- logs --------------------------------------------------------------------------------

pub fn logs(root: &Path, args: LogsArgs) -> anyhow::Result<i32> {
    let store = ContainerStore::new(root);
    let records = match &args.service {
        None => vec![store.resolve(&args.container)?],
        Some(service) => {
            let found = crate::reconcile::observe::project_containers(root, &args.container)?;
            let records: Vec<ContainerRecord> = found
                .into_iter()
                .filter(|f| &f.actual.service == service)
                .map(|f| f.record)
                .collect();
            if records.is_empty() {
                bail!(
                    "project {}: no container of service {service}",
                    args.container
                );
            }
            records
        }
    };
    let tail = if args.tail == "all" {
        None
    } else {
        Some(
            args.tail
                .parse::<usize>()
                .map_err(|_| anyhow!("invalid --tail {:?}: a number or \"all\"", args.tail))?,
        )
    };
    let prefixed = records.len() > 1;
    let width = records.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let args = std::sync::Arc::new(args);
    let mut threads = Vec::new();
    for record in records {
        let paths = store.paths(&record.id);
        let prefix = prefixed.then(|| format!("{:<width$} | ", record.name));
        let follow_in_thread = prefixed && args.follow;
        let args = args.clone();
        let work = move || print_log(&paths, &args, tail, prefix.as_deref());
        if follow_in_thread {
            threads.push(std::thread::spawn(work));
        } else {
            work()?;
        }
    }
    for t in threads {
        t.join().map_err(|_| anyhow!("a log reader panicked"))??;
    }
    Ok(0)
}

/// Prints one log record to the stream it came from (stdout or stderr), after `prefix` and its
/// timestamp when asked; the line goes out whole.
pub(crate) fn print_log_record(
    rec: &crate::runtime::logs::LogRecord,
    timestamps: bool,
    prefix: &str,
) -> std::io::Result<()> {
    let mut line = String::from(prefix);
    if timestamps {
        line.push_str(&rec.time);
        line.push(' ');
    }
    line.push_str(&rec.log);
    match rec.stream {
        Stream::Stdout => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(line.as_bytes())?;
            stdout.flush()
        }
        Stream::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
    }
}

/// Prints the records appended to a container's log from the end of `reader`'s snapshot,
/// polling every `poll`, until the container has stopped (exit recorded, or removed) and
/// everything was read.
pub(crate) fn follow_until_stopped(
    reader: LogReader,
    paths: &ContainerPaths,
    poll: Duration,
    timestamps: bool,
    prefix: &str,
) -> anyhow::Result<()> {
    let (exit, dir) = (paths.exit(), paths.dir.clone());
    for rec in reader.follow(poll, move || exit.exists() || !dir.exists()) {
        print_log_record(&rec?, timestamps, prefix)?;
    }
    Ok(())
}

/// Prints one container's log (its last `tail` records, then following with `-f`), each line
/// after `prefix`. Lines go out whole, so readers of several logs interleave by line.
fn print_log(
    paths: &ContainerPaths,
    args: &LogsArgs,
    tail: Option<usize>,
    prefix: Option<&str>,
) -> anyhow::Result<()> {
    let reader = LogReader::open(paths.log())?;
    let emit = |rec: crate::runtime::logs::LogRecord| {
        print_log_record(&rec, args.timestamps, prefix.unwrap_or_default())
    };
    let snapshot: Vec<_> = match tail {
        None => reader.records().collect::<Result<_, _>>()?,
        Some(n) => reader.tail(n)?,
    };
    for rec in snapshot {
        emit(rec)?;
    }
    if args.follow {
        follow_until_stopped(
            reader,
            paths,
            Duration::from_millis(100),
            args.timestamps,
            prefix.unwrap_or_default(),
        )?;
    }
    Ok(())
}

// ---- stop / kill / rm --------------------------------------------------------------------

pub fn stop(root: &Path, args: StopArgs) -> anyhow::Result<i32> {
    let store = ContainerStore::new(root);
    each(&args.containers, |query| {
        let record = store.resolve(query)?;
        let grace = Duration::from_secs(args.time.unwrap_or(record.stop_grace_secs));
        lifecycle::stop(&store, &record, grace)?;
        println!("{query}");
        Ok(())
    })
}

pub fn kill(root: &Path, args: KillArgs) -> anyhow::Result<i32> {
    let signal =
        parse_signal(&args.signal).ok_or_else(|| anyhow!("invalid signal {:?}", args.signal))?;
    let store = ContainerStore::new(root);
    each(&args.containers, |query| {
        let record = store.resolve(query)?;
        let paths = store.paths(&record.id);
        match observe(&paths, &record) {
            // Restarting too: SIGKILL or the stop signal cancels the restart (the shim says
            // so when nothing runs to take another signal).
            Observed::Live(s)
                if matches!(
                    s.status,
                    crate::runtime::protocol::Status::Running
                        | crate::runtime::protocol::Status::Restarting
                ) =>
            {
                Client::connect(paths.socket(), Duration::from_secs(5))?
                    .signal(signal)
                    .with_context(|| format!("signal container {}", record.name))?;
            }
            _ => bail!("container {} is not running", record.name),
        }
        println!("{query}");
        Ok(())
    })
}

pub fn rm(root: &Path, args: RmArgs) -> anyhow::Result<i32> {
    let store = ContainerStore::new(root);
    each(&args.containers, |query| {
        let record = store.resolve(query)?;
        lifecycle::remove(&store, &record, args.force)?;
        println!("{query}");
        Ok(())
    })
}

/// Runs `f` for every argument, reporting each failure; exit code 1 if any failed.
fn each(items: &[String], mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<i32> {
    let mut failed = false;
    for item in items {
        if let Err(e) = f(item) {
            eprintln!("dockmaster: {e:#}");
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

// ---- exec --------------------------------------------------------------------------------

pub fn exec(root: &Path, args: ExecArgs) -> anyhow::Result<i32> {
    let store = ContainerStore::new(root);
    let record = store.resolve(&args.container)?;
    let paths = store.paths(&record.id);
    let req = ExecRequest {
        args: args.command.clone(),
        env: args.env.clone(),
        cwd: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
    };
    // Without -i the process reads from /dev/null, as with Docker.
    let null = std::fs::File::open("/dev/null")?;
    let stdin = if args.interactive {
        libc::STDIN_FILENO
    } else {
        null.as_raw_fd()
    };
    if args.tty && !std::io::stdin().is_terminal() && args.interactive {
        eprintln!("dockmaster: the input device is not a TTY; continuing without raw mode");
    }
    match shim::exec_in_container(
        &record.name,
        &paths.socket(),
        &req,
        [stdin, libc::STDOUT_FILENO, libc::STDERR_FILENO],
        args.interactive,
    ) {
        Ok(outcome) => Ok(outcome.exit_code),
        Err(e) => {
            eprintln!("dockmaster: {e}");
            let code = match &e {
                shim::ExecError::Refused {
                    kind: crate::runtime::protocol::ErrorKind::NotFound,
                    ..
                } => EXIT_NOT_FOUND,
                shim::ExecError::Refused { .. } => EXIT_CANNOT_INVOKE,
                _ => EXIT_RUN_FAILED,
            };
            Ok(code)
        }
    }
}
