//! `provisioner serve`: the one module that wires the site, the store, the
//! application state ([`crate::app::App`]), the REST API, HTTP boot, DHCP,
//! TFTP and the executor together, and runs the background loops (site
//! watcher, wait-state timers, power sync).
//!
//! Invariants:
//! - Lifecycle BMC actions (boot device, power) are queued with their transition and
//!   carried out by [`crate::executor`] (not in `--api-only` mode, which only records
//!   them); the wait-state timer still guarantees no node waits forever.
//! - `--api-only` runs without DHCP and TFTP (HTTP boot is served by the API
//!   listener either way).
//! - The state directory is created mode 0700; it holds the API token and the
//!   config-signing key ([`crate::keys`]), both mode 0600.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::app::App;
use crate::site::{self, Site};
use crate::store::Store;

/// The API token file inside the state directory (mode 0600).
pub(crate) const TOKEN_FILE: &str = "api-token";
/// The daemon writes its API base URL here so the CLI finds the local daemon.
pub(crate) const URL_FILE: &str = "api-url";
/// How often overdue wait states are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// Options of `provisioner serve`.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    pub site: PathBuf,
    pub state: PathBuf,
    /// Overrides `api.listen` from site.yaml (tests use port 0).
    pub listen: Option<SocketAddr>,
    /// Run without DHCP, TFTP and the executor (lifecycle BMC actions are recorded,
    /// not performed); HTTP boot is still served on the API listener.
    pub api_only: bool,
    /// How often the site files are checked for changes; `None`: only on
    /// `provisioner site reload`.
    pub site_poll: Option<Duration>,
    /// How often every node's power state is read from its BMC; `None`: never.
    pub power_sync: Option<Duration>,
}

/// Reads the API token from `STATE/api-token`, creating it (mode 0600) on first start.
pub(crate) fn ensure_token(state: &Path) -> anyhow::Result<String> {
    let path = state.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) => {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "API token file was readable by others; setting mode 0600");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            let token = token.trim().to_owned();
            anyhow::ensure!(
                token.len() >= 32,
                "{} holds a token shorter than 32 characters; delete the file and restart to get a new one",
                path.display()
            );
            Ok(token)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 32] = rand::random();
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create the API token file {}", path.display()))?;
            writeln!(file, "{token}")?;
            file.sync_all()?;
            info!(path = %path.display(), "created a new API token");
            Ok(token)
        }
        Err(err) => {
            Err(err).with_context(|| format!("cannot read the API token file {}", path.display()))
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub(crate) async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let site_dir = options.site.clone();
    let site = tokio::task::spawn_blocking(move || site::load(&site_dir)).await?.map_err(|errors| {
        anyhow::anyhow!(
            "the site at {} is invalid; fix these and start again (`provisioner site validate {}`):\n{errors}",
            options.site.display(),
            options.site.display()
        )
    })?;
    let listen = options.listen.unwrap_or(site.config.api.listen);
    let tftp = if options.api_only {
        None
    } else {
        start_tftp(&site).await?
    };
    crate::keys::create_state_dir(&options.state)?;
    let store = Store::open(&options.state).await?;
    let token = ensure_token(&options.state)?;
    let (signing_key, _) = crate::keys::ensure_signing_key(&options.state)?;
    let mut app = App::new(site, store, token, signing_key);
    if let Some(stats) = tftp {
        app = app.with_tftp(stats);
    }
    let app = Arc::new(app);
    let report = app.sync_nodes().await?;
    info!(
        nodes = report.added.len() + report.updated.len() + report.unchanged,
        added = report.added.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        summary = %app.site_status().summary,
        "site loaded"
    );

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen} (api.listen in site.yaml); is another daemon running?"
            )
        })?;
    let local = listener.local_addr()?;
    // Written whole then renamed: the CLI and the tests poll for this file and must
    // never read it half-written.
    let url_file = options.state.join(URL_FILE);
    let partial = options.state.join(format!("{URL_FILE}.partial"));
    std::fs::write(&partial, format!("http://{local}\n"))
        .and_then(|()| std::fs::rename(&partial, &url_file))
        .with_context(|| format!("cannot write {}", url_file.display()))?;
    info!(%local, "API listening");
    if !options.api_only {
        start_dhcp(&app, local).await?;
    }

    // The executor carries out BMC actions; an API-only daemon only records them.
    let executor =
        (!options.api_only).then(|| tokio::spawn(crate::executor::run(Arc::clone(&app))));
    let sweeper = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP);
            loop {
                tick.tick().await;
                if let Err(err) = app.sweep_timeouts().await {
                    error!(%err, "timeout sweep failed");
                }
            }
        })
    };
    let site_watcher = options.site_poll.map(|period| {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                app.poll_site().await;
            }
        })
    });

    let power_sync = options.power_sync.map(|period| {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            // The first reading comes one period after start, not during it.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                App::sync_power(&app).await;
            }
        })
    });

    // The peer's address reaches the boot handlers: a script with a boot token
    // goes only to the address our DHCP leased to that MAC.
    axum::serve(
        listener,
        crate::api::router(Arc::clone(&app))
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("API server failed")?;
    sweeper.abort();
    for task in [site_watcher, power_sync, executor].into_iter().flatten() {
        task.abort();
    }
    app.store.close().await;
    info!("stopped");
    Ok(())
}

/// Starts the DHCP server when site.yaml `network.dhcp.mode` is not `off`.
async fn start_dhcp(app: &App, api: SocketAddr) -> anyhow::Result<()> {
    use crate::dhcp::server;
    let site = app.site();
    let http = server::http_address(site.config.network.address, api);
    let Some(settings) = server::Settings::from_site(&site, http) else {
        info!("DHCP off (network.dhcp.mode in site.yaml)");
        return Ok(());
    };
    let handle = server::start(settings, app.store.clone(), app.metrics.dhcp.clone()).await?;
    app.attach_dhcp(handle);
    Ok(())
}

/// Starts the TFTP server on the provisioning address when the site enables it.
/// Boot settings are read at start: changing them needs a restart.
async fn start_tftp(site: &Site) -> anyhow::Result<Option<Arc<crate::tftp::TftpStats>>> {
    use crate::tftp::{TftpConfig, TftpServer, transfer::Limits};
    let Some(spec) = site.config.boot.tftp else {
        return Ok(None);
    };
    let files = &site.config.boot.files;
    anyhow::ensure!(
        files.is_dir(),
        "boot.files: {} is not a directory; install Debian's `ipxe` package or set boot.files in site.yaml",
        files.display()
    );
    let config = TftpConfig {
        root: Some(files.clone()),
        files: Default::default(),
        limits: Limits {
            max_blksize: spec.max_blksize,
            ..Limits::default()
        },
        max_transfers: spec.max_transfers,
    };
    let addr = SocketAddr::new(site.config.network.address.addr().into(), spec.port);
    let server = TftpServer::bind(addr, config).await.with_context(|| {
        format!("cannot listen for TFTP on {addr} (boot.tftp in site.yaml): is another TFTP server running?")
    })?;
    let stats = Arc::clone(&server.stats);
    info!(%addr, files = %files.display(), "TFTP listening");
    tokio::spawn(async move {
        if let Err(err) = server.run().await {
            error!(%err, "TFTP server stopped");
        }
    });
    Ok(Some(stats))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}
