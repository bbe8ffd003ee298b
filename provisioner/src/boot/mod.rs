//! HTTP boot: per-machine iPXE scripts (`GET /boot/{mac}.ipxe`), boot files
//! for UEFI HTTP boot (`GET /boot/{file}`) and catalog images
//! (`GET /images/{image}/{file}`: a ramdisk's files, a host image's
//! `host.raw.zst` and `manifest.json`), on the API's listener, without the
//! operator token (firmware cannot send one).
//!
//! `script` decides and renders (pure, apart from reading the site's
//! template overrides); `files` plans and streams file answers. This module
//! is the axum edge: it reads the node from the store, issues the per-boot
//! token when a script boots a ramdisk, and counts every script served.
//!
//! Invariants: only files inside the boot-files directory and the files a
//! catalog image names are served; every script fetched is logged and
//! counted per MAC (`provisioner_boot_scripts_total{mac,script}`; MACs past
//! [`crate::metrics::MAX_MAC_LABELS`] share the label `other`, so unknown machines cannot
//! grow the metrics without bound); a template that fails to render gives
//! the built-in `wait` script saying so (the machine keeps retrying).

pub(crate) mod files;
pub(crate) use provisioner_core::script;

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::net::Mac;
use serde::Deserialize;
use tracing::{error, info, warn};

use crate::app::App;
use crate::progress::Step;
use crate::site::ImageSource;
use script::{Choice, NodeView, ScriptContext, ScriptKind, Templates};

#[derive(Debug, Deserialize)]
pub(crate) struct ScriptQuery {
    /// How many times the machine asked before (set by the scripts themselves).
    #[serde(default)]
    retry: Option<u32>,
}

fn text(code: StatusCode, message: String) -> Response {
    (code, format!("{message}\n")).into_response()
}

/// `GET /boot/{file}`: `{mac}.ipxe` is a machine's script, anything else a boot file.
pub(crate) async fn boot_file(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(file): Path<String>,
    Query(query): Query<ScriptQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(mac) = file.strip_suffix(".ipxe") {
        return match Mac::parse_nic(mac) {
            Ok(mac) => ipxe_script(&app, mac, peer.ip(), query.retry.unwrap_or(0), &headers).await,
            Err(err) => text(StatusCode::NOT_FOUND, err.to_string()),
        };
    }
    let root = app.site().config.boot.files.clone();
    match files::resolve(&root, &file) {
        Ok(path) => files::respond(&path, &headers).await,
        Err(err) => {
            warn!(%err, "boot file refused");
            text(StatusCode::NOT_FOUND, err.to_string())
        }
    }
}

/// `GET /images/{image}/{file}`: a ramdisk's `vmlinuz` or `initramfs`, a
/// host image's compressed disk (`host.raw.zst`) or `manifest.json`, or a
/// file image under its own file name.
pub(crate) async fn image_file(
    State(app): State<Arc<App>>,
    Path((image, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let site = app.site();
    let path = match site.image(&image).map(|i| &i.source) {
        Some(ImageSource::Ramdisk { kernel, .. }) if file == "vmlinuz" => kernel.clone(),
        Some(ImageSource::Ramdisk { initramfs, .. }) if file == "initramfs" => initramfs.clone(),
        Some(ImageSource::Host { disk, .. })
            if disk
                .file_name()
                .is_some_and(|n| n.to_str() == Some(file.as_str())) =>
        {
            disk.clone()
        }
        Some(ImageSource::Host { manifest_path, .. }) if file == "manifest.json" => {
            manifest_path.clone()
        }
        Some(ImageSource::Path(path))
            if path
                .file_name()
                .is_some_and(|n| n.to_str() == Some(file.as_str())) =>
        {
            path.clone()
        }
        Some(_) => {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "image `{image}` has no file `{file}` (ramdisks: vmlinuz, initramfs; host \
                     images: host.raw.zst, manifest.json)"
                ),
            );
        }
        None => {
            return text(
                StatusCode::NOT_FOUND,
                format!("no image `{image}` in site.yaml"),
            );
        }
    };
    let response = files::respond(&path, &headers).await;
    if response.status() == StatusCode::NOT_FOUND {
        error!(%image, path = %path.display(), "catalog image file missing; build it or fix site.yaml");
    }
    response
}

/// `ADDR:PORT` the machine used to reach us (its `Host` header), else the
/// provisioning address with the listener's port.
pub(crate) fn server_of(app: &App, headers: &HeaderMap) -> String {
    let plausible = |h: &&str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b))
    };
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(plausible)
        .map_or_else(
            || {
                let site = app.site();
                format!(
                    "{}:{}",
                    site.config.network.address.addr(),
                    site.config.api.listen.port()
                )
            },
            str::to_owned,
        )
}

async fn ipxe_script(
    app: &App,
    mac: Mac,
    peer: std::net::IpAddr,
    retry: u32,
    headers: &HeaderMap,
) -> Response {
    let site = app.site();
    let node = match app.store.node_by_mac(&mac.to_string()).await {
        Ok(node) => node,
        Err(err) => {
            error!(%mac, %err, "cannot read the node for an iPXE script");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store error; see the daemon log".into(),
            );
        }
    };
    let view = node.as_ref().map(|n| NodeView {
        name: n.name.clone(),
        state: n.state,
        maintenance: n.maintenance,
        maintenance_reason: n.maintenance_reason.clone(),
        last_error: n.last_error.clone(),
    });
    let image = site.config.boot.inspect_image.as_deref();
    let mut choice = script::choose(view.as_ref(), image);
    // With our DHCP handing out the addresses, the token goes only to the
    // address leased to this MAC (proxy and off modes have no lease to check).
    if choice.kind == ScriptKind::Inspect
        && site.config.network.dhcp.mode == crate::site::DhcpMode::Full
    {
        let leased = match app.store.dhcp_bound_ip(mac, chrono::Utc::now()).await {
            Ok(leased) => leased,
            Err(err) => {
                error!(%mac, %err, "cannot read the DHCP lease for an iPXE script");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store error; see the daemon log".into(),
                );
            }
        };
        if let Some(reason) = script::token_refusal(mac, leased, peer) {
            warn!(%mac, %peer, %reason, "boot token refused");
            app.metrics.boot_token_refusals.inc();
            choice = Choice {
                kind: ScriptKind::Wait,
                reason,
            };
        }
    }
    let token = if choice.kind == ScriptKind::Inspect {
        match app
            .store
            .issue_boot_token(mac, view.as_ref().map(|v| v.name.as_str()))
            .await
        {
            Ok(token) => Some(token),
            Err(err) => {
                error!(%mac, %err, "cannot issue a boot token");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store error; see the daemon log".into(),
                );
            }
        }
    } else {
        None
    };
    let server = server_of(app, headers);
    let context = ScriptContext::new(
        mac,
        view.as_ref(),
        &choice,
        &server,
        retry,
        image,
        token.as_deref(),
    );
    let dir = site.dir.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        Templates::load(&dir).and_then(|t| t.render(choice.kind, &context))
    })
    .await;
    let (kind, body) = match rendered {
        Ok(Ok(body)) => (choice.kind, body),
        Ok(Err(err)) => {
            error!(%mac, %err, "iPXE template failed; serving the built-in wait script");
            let fallback = Choice {
                kind: ScriptKind::Wait,
                reason: format!("the site's iPXE template is broken ({err}); fix it"),
            };
            let context =
                ScriptContext::new(mac, view.as_ref(), &fallback, &server, retry, None, None);
            match Templates::builtin().render(ScriptKind::Wait, &context) {
                Ok(body) => (ScriptKind::Wait, body),
                Err(err) => {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, err.to_string());
                }
            }
        }
        Err(err) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("renderer crashed: {err}"),
            );
        }
    };
    info!(
        %mac,
        node = view.as_ref().map_or("-", |v| v.name.as_str()),
        script = kind.name(),
        retry,
        "iPXE script served"
    );
    app.metrics
        .count_boot_script(app.boot_mac_labels.label(mac), kind.name());
    if let Some(view) = &view
        && let Err(err) = app
            .store
            .record_progress(&view.name, Step::Script, chrono::Utc::now())
            .await
    {
        warn!(node = %view.name, %err, "cannot record that the iPXE script was fetched");
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}
