//! A static file server written by others, as the peer for HTTP benchmarks: nginx when it is
//! installed (the better peer), else `python3 -m http.server`. Started on 127.0.0.1 on a free
//! port, serving one directory, stopped by [`ChildGuard`] on drop.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::process::{ChildGuard, free_port, which};

/// A running static file server.
#[derive(Debug)]
pub struct StaticServer {
    /// "nginx" or "python3 -m http.server".
    pub name: &'static str,
    pub port: u16,
    /// Where its stderr goes.
    pub log: PathBuf,
    pub guard: ChildGuard,
}

impl StaticServer {
    /// Starts nginx (if on PATH) or python's http.server serving `root`, with its config and
    /// logs in `work`. `root` and its files must be world-readable when nginx runs as root
    /// (its workers drop to `nobody`); this function makes them so.
    pub fn start(root: &Path, work: &Path) -> Result<StaticServer> {
        let port = free_port()?;
        let log = work.join("peer.stderr.log");
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        if let Some(nginx) = which("nginx").or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/nginx");
            sbin.is_file().then_some(sbin)
        }) {
            make_world_readable(root)?;
            let conf = work.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(root, work, port))
                .with_context(|| format!("writing {}", conf.display()))?;
            let guard = ChildGuard::spawn(
                "nginx",
                Command::new(nginx)
                    .arg("-p")
                    .arg(work)
                    .arg("-e")
                    .arg(&log)
                    .arg("-c")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(stderr),
            )?;
            return Ok(StaticServer {
                name: "nginx",
                port,
                log,
                guard,
            });
        }
        let guard = ChildGuard::spawn(
            "python3 -m http.server",
            Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .arg("--directory")
                .arg(root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr),
        )?;
        Ok(StaticServer {
            name: "python3 -m http.server",
            port,
            log,
            guard,
        })
    }
}

fn make_world_readable(root: &Path) -> Result<()> {
    // The directories above `root` (our tempdir) must be traversable too.
    for dir in root.ancestors().take(2) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 755 {}", dir.display()))?;
    }
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod 644 {}", path.display()))?;
    }
    Ok(())
}

/// A minimal nginx config: foreground, one worker, no access log, everything in `work`.
fn nginx_conf(root: &Path, work: &Path, port: u16) -> String {
    let w = work.display();
    let mut conf = String::new();
    let _ = write!(
        conf,
        "daemon off;
master_process on;
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/peer.stderr.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    types {{ application/json json; }}
    default_type application/octet-stream;
    client_body_temp_path {w}/client_body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
",
        root = root.display()
    );
    conf
}
