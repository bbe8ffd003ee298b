//! Which iPXE script a machine gets, and its rendering with tera.
//!
//! [`choose`] is the decision (pure: node state in, script kind out);
//! [`Templates::render`] turns a [`ScriptContext`] into the script text. The
//! only I/O is [`Templates::load`], which reads the site's overrides
//! (`SITE/templates/NAME.ipxe.tera`) over the defaults built into the binary.
//!
//! Invariants: every script either boots something or waits and asks for a
//! fresh script (with back-off, renewing DHCP when the server cannot be
//! reached): none ends at the iPXE shell. Text that comes from operators or
//! nodes (reasons, names) is stripped of what iPXE would interpret (`$`,
//! `|`, `&`, line breaks) before it reaches a template.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use model::net::Mac;
use serde::Serialize;

use crate::lifecycle::State;

/// The scripts a machine can get, by template name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScriptKind {
    /// Boot the inspection ramdisk (kernel + initramfs from the catalog).
    Inspect,
    /// Leave network boot: boot from the local disk.
    LocalDisk,
    /// Print why nothing boots now, wait, and ask again.
    Wait,
}

impl ScriptKind {
    pub const ALL: [ScriptKind; 3] = [ScriptKind::Inspect, ScriptKind::LocalDisk, ScriptKind::Wait];

    /// The template name (`SITE/templates/{name}.ipxe.tera` overrides it).
    pub fn name(self) -> &'static str {
        match self {
            ScriptKind::Inspect => "inspect",
            ScriptKind::LocalDisk => "local-disk",
            ScriptKind::Wait => "wait",
        }
    }

    fn default_text(self) -> &'static str {
        match self {
            ScriptKind::Inspect => include_str!("templates/inspect.ipxe.tera"),
            ScriptKind::LocalDisk => include_str!("templates/local-disk.ipxe.tera"),
            ScriptKind::Wait => include_str!("templates/wait.ipxe.tera"),
        }
    }
}

/// What the decision needs to know about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub state: State,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    pub last_error: Option<String>,
}

/// The decision: which script, and the reason shown by a `Wait` script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub kind: ScriptKind,
    pub reason: String,
}

/// Picks the script for a machine: `node` is `None` for a MAC no node has;
/// `inspect_image` is site.yaml's `boot.inspect_image`.
pub fn choose(node: Option<&NodeView>, inspect_image: Option<&str>) -> Choice {
    let choice = |kind, reason: &str| Choice {
        kind,
        reason: reason.to_owned(),
    };
    let ramdisk = |what: &str| match inspect_image {
        Some(_) => choice(ScriptKind::Inspect, what),
        None => choice(
            ScriptKind::Wait,
            "no inspection ramdisk: set boot.inspect_image in site.yaml",
        ),
    };
    let Some(node) = node else {
        return ramdisk("unknown machine: inspection");
    };
    if node.maintenance {
        let why = node
            .maintenance_reason
            .as_deref()
            .unwrap_or("no reason given");
        return choice(
            ScriptKind::Wait,
            &format!(
                "in maintenance ({why}); `provisioner node maintenance {} off` releases it",
                node.name
            ),
        );
    }
    match node.state {
        State::Enrolled | State::Inspecting => ramdisk("inspection"),
        // The agent in the ramdisk does the deploying and the cleaning.
        State::Deploying | State::Cleaning => ramdisk("agent work"),
        State::Active => choice(ScriptKind::LocalDisk, "active"),
        State::Available => choice(
            ScriptKind::Wait,
            "available: nothing to boot until it is deployed (`provisioner node event NAME deploy`)",
        ),
        State::Failed => {
            let why = node.last_error.as_deref().unwrap_or("no reason recorded");
            choice(
                ScriptKind::Wait,
                &format!(
                    "failed: {why}; `provisioner node history {}` says more",
                    node.name
                ),
            )
        }
    }
}

/// Seconds a script waits before asking again after `retry` earlier
/// attempts: 5, 10, 20, 40, then 60.
pub fn backoff(retry: u32) -> u32 {
    5u32.saturating_mul(1u32 << retry.min(4)).min(60)
}

/// Removes what iPXE would interpret in an `echo` line: settings
/// expansion (`$`), command chaining (`|`, `&`), line breaks, control
/// characters; keeps the text readable.
pub fn ipxe_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '$' | '|' | '&' | '\\' => ' ',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// Everything a template can use.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptContext {
    /// The machine's MAC, lowercase colon form.
    pub mac: String,
    /// The node's name, or `unknown machine`.
    pub node_label: String,
    /// The node's state (`unknown` without a node).
    pub state: String,
    /// The reason a `wait` script shows.
    pub reason: String,
    /// `ADDR:PORT` of the provisioner's HTTP listener as the machine reached it.
    pub server: String,
    /// This script's URL for the next attempt (with `?retry=N+1`).
    pub next_url: String,
    /// Seconds to wait before the next attempt.
    pub delay: u32,
    /// The inspection image's name, kernel and initramfs URLs (inspect only).
    pub image: String,
    pub kernel_url: String,
    pub initramfs_url: String,
    /// The kernel command line (inspect only; carries the per-boot token).
    pub cmdline: String,
}

impl ScriptContext {
    /// The context for `mac`, reached at `server`, after `retry` attempts.
    /// `token` is the per-boot token (the ramdisk's only credential).
    pub fn new(
        mac: Mac,
        node: Option<&NodeView>,
        choice: &Choice,
        server: &str,
        retry: u32,
        image: Option<&str>,
        token: Option<&str>,
    ) -> ScriptContext {
        let image = image.unwrap_or_default();
        let base = format!("http://{server}");
        let (kernel_url, initramfs_url, cmdline) = match (choice.kind, token) {
            (ScriptKind::Inspect, Some(token)) => (
                format!("{base}/images/{image}/vmlinuz"),
                format!("{base}/images/{image}/initramfs"),
                // `initrd=` names the initrd for the EFI stub; a BIOS kernel ignores it.
                format!(
                    "initrd=initramfs console=ttyS0,115200 provisioner.url={base} \
                     provisioner.token={token} provisioner.mac={mac}"
                ),
            ),
            _ => Default::default(),
        };
        ScriptContext {
            mac: mac.to_string(),
            node_label: ipxe_text(node.map_or("unknown machine", |n| n.name.as_str())),
            state: node.map_or_else(|| "unknown".to_owned(), |n| n.state.to_string()),
            reason: ipxe_text(&choice.reason),
            server: server.to_owned(),
            next_url: format!("{base}/boot/{mac}.ipxe?retry={}", retry.saturating_add(1)),
            delay: backoff(retry),
            image: image.to_owned(),
            kernel_url,
            initramfs_url,
            cmdline,
        }
    }
}

/// A template that failed to parse or render.
#[derive(Debug, thiserror::Error)]
#[error("iPXE template {file}: {message}")]
pub struct TemplateError {
    /// The template's file (the site's override, or `built-in NAME`).
    pub file: String,
    /// Tera's explanation, with its position.
    pub message: String,
}

/// The three templates: the site's overrides over the built-in defaults.
#[derive(Debug)]
pub struct Templates {
    tera: tera::Tera,
    /// Where each template came from, by kind, for error messages.
    origin: Vec<(ScriptKind, String)>,
}

/// The whole chain of a tera error (its `Display` is only the outer part).
fn tera_message(err: &tera::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

impl Templates {
    /// The override file of `kind` in a site directory.
    pub fn override_path(site_dir: &Path, kind: ScriptKind) -> PathBuf {
        site_dir
            .join("templates")
            .join(format!("{}.ipxe.tera", kind.name()))
    }

    /// Built-in templates overridden by `SITE/templates/*.ipxe.tera` when present.
    pub fn load(site_dir: &Path) -> Result<Templates, TemplateError> {
        let mut sources = vec![];
        for kind in ScriptKind::ALL {
            let path = Self::override_path(site_dir, kind);
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((kind, path.display().to_string(), text)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => sources.push((
                    kind,
                    format!("built-in {}", kind.name()),
                    kind.default_text().to_owned(),
                )),
                Err(err) => {
                    return Err(TemplateError {
                        file: path.display().to_string(),
                        message: format!("cannot read it: {err}"),
                    });
                }
            }
        }
        Self::from_sources(sources)
    }

    /// The built-in templates only.
    pub fn builtin() -> Templates {
        Self::from_sources(
            ScriptKind::ALL
                .into_iter()
                .map(|k| {
                    (
                        k,
                        format!("built-in {}", k.name()),
                        k.default_text().to_owned(),
                    )
                })
                .collect(),
        )
        .expect("the built-in templates parse (tested)")
    }

    fn from_sources(
        sources: Vec<(ScriptKind, String, String)>,
    ) -> Result<Templates, TemplateError> {
        let mut tera = tera::Tera::default();
        // iPXE scripts are not HTML: no escaping.
        tera.autoescape_on(vec![]);
        let mut origin = vec![];
        for (kind, file, text) in sources {
            tera.add_raw_template(kind.name(), &text)
                .map_err(|err| TemplateError {
                    file: file.clone(),
                    message: tera_message(&err),
                })?;
            origin.push((kind, file));
        }
        Ok(Templates { tera, origin })
    }

    /// Renders the script of `kind`.
    pub fn render(
        &self,
        kind: ScriptKind,
        context: &ScriptContext,
    ) -> Result<String, TemplateError> {
        let context = tera::Context::from_serialize(context).map_err(|err| TemplateError {
            file: kind.name().to_owned(),
            message: tera_message(&err),
        })?;
        self.tera
            .render(kind.name(), &context)
            .map_err(|err| TemplateError {
                file: self
                    .origin
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map_or_else(|| kind.name().to_owned(), |(_, f)| f.clone()),
                message: tera_message(&err),
            })
    }
}

/// A problem with a site template, for `site validate` (`file:line:column`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// Relative to the site directory, e.g. `templates/wait.ipxe.tera`.
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Tera's parse errors carry ` --> LINE:COLUMN`; the rest of the text is
/// folded into one line.
fn located(message: &str) -> (usize, usize, String) {
    let position = message.split(" --> ").nth(1).and_then(|rest| {
        let text = rest.split_whitespace().next()?;
        let (line, column) = text.split_once(':')?;
        Some((line.parse().ok()?, column.parse().ok()?))
    });
    let detail = message
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("= "))
        .map_or_else(
            || message.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_owned,
        );
    let (line, column) = position.unwrap_or((1, 1));
    (line, column, detail)
}

/// Checks the site's template overrides (`SITE/templates/`): only the known
/// names, each parses, and each renders with a sample context (so a
/// misspelt variable is found before a machine asks).
pub fn check_site_templates(site_dir: &Path) -> Vec<TemplateProblem> {
    let dir = site_dir.join("templates");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut problems = vec![];
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let known: Vec<String> = ScriptKind::ALL
        .iter()
        .map(|k| format!("{}.ipxe.tera", k.name()))
        .collect();
    for name in names {
        let file = PathBuf::from("templates").join(&name);
        let Some(kind) = ScriptKind::ALL
            .into_iter()
            .find(|k| name == format!("{}.ipxe.tera", k.name()))
        else {
            problems.push(TemplateProblem {
                file,
                line: 1,
                column: 1,
                message: format!(
                    "unknown template {name:?}: the site may override {}",
                    known.join(", ")
                ),
            });
            continue;
        };
        let text = match std::fs::read_to_string(dir.join(&name)) {
            Ok(text) => text,
            Err(err) => {
                problems.push(TemplateProblem {
                    file,
                    line: 1,
                    column: 1,
                    message: format!("cannot read it: {err}"),
                });
                continue;
            }
        };
        let sources = ScriptKind::ALL
            .into_iter()
            .map(|k| {
                let text = if k == kind {
                    text.clone()
                } else {
                    k.default_text().to_owned()
                };
                (k, file.display().to_string(), text)
            })
            .collect();
        let result = Templates::from_sources(sources).and_then(|t| {
            let sample = ScriptContext::new(
                Mac([0x52, 0x54, 0, 0, 0, 1]),
                None,
                &Choice {
                    kind,
                    reason: "sample".into(),
                },
                "192.0.2.1:8080",
                0,
                Some("sample-image"),
                Some("sample-token"),
            );
            t.render(kind, &sample)
        });
        if let Err(err) = result {
            let (line, column, detail) = located(&err.message);
            problems.push(TemplateProblem {
                file,
                line,
                column,
                message: format!("iPXE template does not render: {detail}"),
            });
        }
    }
    problems
}

/// Whether a script that carries a per-boot token may go to the machine that
/// asked from `peer`, when our DHCP server hands out the addresses (`full`
/// mode): only when `peer` is the address of `mac`'s current lease
/// (`leased`: bound and not expired). Anyone on the provisioning network can
/// ask for any MAC's script; the token in it opens the agent API for that
/// node (its deploy order, its credential), so another address gets a
/// `wait` script instead, and the reason says why. `None`: hand it out.
pub fn token_refusal(mac: Mac, leased: Option<Ipv4Addr>, peer: IpAddr) -> Option<String> {
    let peer = peer.to_canonical();
    match leased {
        Some(ip) if IpAddr::V4(ip) == peer => None,
        Some(ip) => Some(format!(
            "this script was asked for from {peer}, but our DHCP leased {ip} to {mac}: \
             renewing DHCP and asking again"
        )),
        None => Some(format!(
            "this script was asked for from {peer}, but {mac} holds no lease of our DHCP: \
             renewing DHCP and asking again"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x52, 0x54, 0, 0xaa, 0, 1]);

    fn node(state: State) -> NodeView {
        NodeView {
            name: "lab-compute-0".into(),
            state,
            maintenance: false,
            maintenance_reason: None,
            last_error: None,
        }
    }

    #[test]
    fn the_state_picks_the_script() {
        let image = Some("inspect-ramdisk");
        let kind = |n: Option<&NodeView>, image| choose(n, image).kind;
        assert_eq!(kind(None, image), ScriptKind::Inspect);
        assert_eq!(kind(None, None), ScriptKind::Wait);
        let cases = [
            (State::Enrolled, ScriptKind::Inspect),
            (State::Inspecting, ScriptKind::Inspect),
            (State::Deploying, ScriptKind::Inspect),
            (State::Cleaning, ScriptKind::Inspect),
            (State::Active, ScriptKind::LocalDisk),
            (State::Available, ScriptKind::Wait),
            (State::Failed, ScriptKind::Wait),
        ];
        for (state, expected) in cases {
            assert_eq!(kind(Some(&node(state)), image), expected, "{state}");
        }
        let mut frozen = node(State::Active);
        frozen.maintenance = true;
        frozen.maintenance_reason = Some("new DIMMs".into());
        let choice = choose(Some(&frozen), image);
        assert_eq!(choice.kind, ScriptKind::Wait);
        assert!(choice.reason.contains("new DIMMs"), "{}", choice.reason);
        let mut failed = node(State::Failed);
        failed.last_error = Some("inspection timed out after 5m".into());
        assert!(
            choose(Some(&failed), image)
                .reason
                .contains("timed out after 5m")
        );
        assert!(choose(None, None).reason.contains("boot.inspect_image"));
    }

    #[test]
    fn site_validate_finds_bad_templates_with_their_position() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_site_templates(dir.path()), vec![]);
        let templates = dir.path().join("templates");
        std::fs::create_dir(&templates).unwrap();
        std::fs::write(
            templates.join("wait.ipxe.tera"),
            "#!ipxe\necho {{ reason }}\n",
        )
        .unwrap();
        assert_eq!(check_site_templates(dir.path()), vec![]);
        std::fs::write(templates.join("inspekt.ipxe.tera"), "#!ipxe\n").unwrap();
        std::fs::write(
            templates.join("inspect.ipxe.tera"),
            "#!ipxe\necho {{ reason\n",
        )
        .unwrap();
        std::fs::write(
            templates.join("local-disk.ipxe.tera"),
            "#!ipxe\necho {{ nope }}\n",
        )
        .unwrap();
        let problems = check_site_templates(dir.path());
        let got: Vec<String> = problems
            .iter()
            .map(|p| {
                format!(
                    "{}:{}:{}: {}",
                    p.file.display(),
                    p.line,
                    p.column,
                    p.message
                )
            })
            .collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(
            got[0].starts_with(
                "templates/inspect.ipxe.tera:3:1: iPXE template does not render: expected"
            ),
            "{got:#?}"
        );
        assert!(
            got[1].starts_with(
                "templates/inspekt.ipxe.tera:1:1: unknown template \"inspekt.ipxe.tera\""
            ),
            "{got:#?}"
        );
        assert!(
            got[2].starts_with("templates/local-disk.ipxe.tera:1:1: iPXE template does not render"),
            "{got:#?}"
        );
        assert!(got[2].contains("nope"), "{got:#?}");
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let delays: Vec<u32> = (0..8).map(backoff).collect();
        assert_eq!(delays, [5, 10, 20, 40, 60, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), 60);
    }

    #[test]
    fn ipxe_never_sees_expansions_or_chaining_from_operator_text() {
        assert_eq!(
            ipxe_text("fan ${x} broke || shell\nnext & more"),
            "fan  {x} broke    shell next   more"
        );
    }

    fn render(kind: State, retry: u32) -> String {
        let n = node(kind);
        let choice = choose(Some(&n), Some("inspect-ramdisk"));
        let token = (choice.kind == ScriptKind::Inspect).then_some("0123abcd");
        let context = ScriptContext::new(
            MAC,
            Some(&n),
            &choice,
            "10.213.0.1:8080",
            retry,
            Some("inspect-ramdisk"),
            token,
        );
        Templates::builtin().render(choice.kind, &context).unwrap()
    }

    #[test]
    fn rendered_scripts() {
        insta::assert_snapshot!("inspect", render(State::Enrolled, 0));
        insta::assert_snapshot!("local-disk", render(State::Active, 0));
        insta::assert_snapshot!("wait-failed", render(State::Failed, 2));
    }

    #[test]
    fn every_script_retries_instead_of_ending_at_the_shell() {
        for state in [State::Enrolled, State::Failed, State::Available] {
            let text = render(state, 0);
            assert!(text.starts_with("#!ipxe\n"), "{text}");
            assert!(text.contains("chain --replace --autofree http://10.213.0.1:8080/boot/52:54:00:aa:00:01.ipxe?retry=1 || goto offline"));
            assert!(
                text.contains("dhcp || goto offline\ngoto chain\n"),
                "{text}"
            );
        }
        let inspect = render(State::Inspecting, 0);
        for line in inspect.lines().filter(|l| {
            l.starts_with("kernel ") || l.starts_with("initrd ") || l.starts_with("boot")
        }) {
            assert!(line.ends_with("|| goto retry"), "{line}");
        }
        assert!(inspect.contains(
            "console=ttyS0,115200 provisioner.url=http://10.213.0.1:8080 provisioner.token=0123abcd provisioner.mac=52:54:00:aa:00:01"
        ));
    }

    #[test]
    fn site_templates_override_the_builtin_ones_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        let wait = Templates::override_path(dir.path(), ScriptKind::Wait);
        std::fs::write(&wait, "#!ipxe\necho site says {{ reason }}\n").unwrap();
        let templates = Templates::load(dir.path()).unwrap();
        let n = node(State::Available);
        let choice = choose(Some(&n), None);
        let context = ScriptContext::new(MAC, Some(&n), &choice, "h:1", 0, None, None);
        let text = templates.render(ScriptKind::Wait, &context).unwrap();
        assert!(
            text.starts_with("#!ipxe\necho site says available: nothing to boot"),
            "{text}"
        );
        // The others stay built in.
        assert!(
            templates
                .render(ScriptKind::LocalDisk, &context)
                .unwrap()
                .contains("sanboot")
        );

        std::fs::write(&wait, "#!ipxe\necho {{ reason\n").unwrap();
        let err = Templates::load(dir.path()).unwrap_err();
        assert_eq!(err.file, wait.display().to_string());
        assert!(err.to_string().contains("wait.ipxe.tera"), "{err}");

        std::fs::write(&wait, "#!ipxe\necho {{ no_such_thing }}\n").unwrap();
        let err = Templates::load(dir.path())
            .unwrap()
            .render(ScriptKind::Wait, &context)
            .unwrap_err();
        assert!(err.message.contains("no_such_thing"), "{err}");
    }

    #[test]
    fn a_token_goes_only_to_the_address_leased_to_the_mac() {
        let mac: Mac = "52:54:00:00:00:01".parse().unwrap();
        let leased = Ipv4Addr::new(10, 0, 0, 5);
        assert_eq!(token_refusal(mac, Some(leased), IpAddr::V4(leased)), None);
        // The API listening on [::] sees IPv4 peers as mapped addresses.
        let mapped = IpAddr::V6(leased.to_ipv6_mapped());
        assert_eq!(token_refusal(mac, Some(leased), mapped), None);
        let other = token_refusal(mac, Some(leased), "10.0.0.9".parse().unwrap()).unwrap();
        assert!(
            other.contains("from 10.0.0.9, but our DHCP leased 10.0.0.5 to 52:54:00:00:00:01"),
            "{other}"
        );
        let none = token_refusal(mac, None, "10.0.0.9".parse().unwrap()).unwrap();
        assert!(none.contains("holds no lease"), "{none}");
    }
}
