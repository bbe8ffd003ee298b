//! The site repository: `site.yaml`, `nodes.yaml` and `profiles/*.yaml` in one
//! directory an operator keeps in git. Loading is synchronous and pure apart
//! from reading the files; every problem is reported as a [`Diagnostic`]
//! with `file:line:column`.
//!
//! INTERFACE (owned by the site work; the daemon relies on these names):
//! - `pub fn load(dir: &Path) -> Result<Site, SiteErrors>`
//! - `Site { dir, config: SiteConfig, nodes: Vec<NodeSpec>, profiles: Vec<model::profile::Profile> }`
//! - `NodeSpec { name, bmc: Option<BmcSpec>, boot_mac: Option<model::net::Mac>, ip: Option<Ipv4Addr>, serial, profile, role, image }`
//! - `SiteErrors(Vec<Diagnostic>)`, `Diagnostic { file, line, column, message }` shown as
//!   `file:line:column: message`
//! - `pub fn schemas() -> Vec<(&'static str, serde_json::Value)>` (file name, JSON Schema)
//!
//! How: each file is parsed by [`yaml`] into JSON data plus the position of
//! every key and value; the data is deserialized into wire types one element
//! at a time (each node, each image, each section), so one bad node does not
//! hide the next; the wire types are then checked and converted into domain
//! types, and cross-file references (node -> profile, profile -> image) are
//! checked last. Invariants: `load` never panics on any input, reports every
//! problem it can find rather than the first, and returns a `Site` only when
//! there is none.

mod bmc_url;
mod config;
mod diag;
mod nodes;
pub mod yaml;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use model::profile::Profile;
use serde_json::Value;

pub use bmc_url::{BmcKind, BmcUrl, BmcUrlError};
pub use config::{
    AfterInspection, ApiConfig, ApiWire, BootConfig, BootWire, DEFAULT_API_LISTEN,
    DEFAULT_LEASE_TIME, DhcpAnswer, DhcpConfig, DhcpMode, DhcpRange, DhcpWire, DiscoveryConfig,
    DiscoveryWire, ImageSource, ImageSpec, ImageWire, LifecycleConfig, LifecycleWire,
    NetworkConfig, NetworkWire, SiteConfig, SiteFile, TftpConfigSpec, TftpWire, UefiLoaderWire,
};
pub use diag::{Diagnostic, SiteErrors};
pub use nodes::{BmcSpec, BmcTls, BmcWire, Credential, NodeSpec, NodeWire, NodesFile};

use diag::{At, FileCtx};

/// A loaded, fully validated site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The site directory as given to [`load`].
    pub dir: PathBuf,
    /// `site.yaml`.
    pub config: SiteConfig,
    /// `nodes.yaml`, in file order.
    pub nodes: Vec<NodeSpec>,
    /// `profiles/*.yaml`, sorted by file name.
    pub profiles: Vec<Profile>,
}

impl Site {
    /// One line for logs and `provisioner site validate`, e.g.
    /// `site OK: 3 nodes, 3 profiles, 1 image, dhcp full on br0`.
    pub fn summary(&self) -> String {
        fn count(n: usize, what: &str) -> String {
            format!("{n} {what}{}", if n == 1 { "" } else { "s" })
        }
        let mode = match self.config.network.dhcp.mode {
            DhcpMode::Full => "full",
            DhcpMode::Proxy => "proxy",
            DhcpMode::Off => "off",
        };
        format!(
            "site OK: {}, {}, {}, dhcp {mode} on {}",
            count(self.nodes.len(), "node"),
            count(self.profiles.len(), "profile"),
            count(self.config.images.len(), "image"),
            self.config.network.interface
        )
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The catalog image called `name`.
    pub fn image(&self, name: &str) -> Option<&ImageSpec> {
        self.config.images.iter().find(|i| i.name == name)
    }
}

/// JSON Schemas of the three kinds of site file, then of the inventory the
/// agent reports, of the host plan and of the agent protocol's messages (for
/// tools that read them), as (file
/// name, schema).
pub fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "site.schema.json",
            schemars::schema_for!(SiteFile).to_value(),
        ),
        (
            "nodes.schema.json",
            schemars::schema_for!(NodesFile).to_value(),
        ),
        (
            "profile.schema.json",
            schemars::schema_for!(Profile).to_value(),
        ),
        (
            "inventory.schema.json",
            schemars::schema_for!(model::inventory::Inventory).to_value(),
        ),
        (
            "host-plan.schema.json",
            schemars::schema_for!(model::plan::HostPlan).to_value(),
        ),
        (
            "agent-inventory-report.schema.json",
            schemars::schema_for!(model::agent::InventoryReport).to_value(),
        ),
        (
            "agent-heartbeat.schema.json",
            schemars::schema_for!(model::agent::Heartbeat).to_value(),
        ),
        (
            "agent-command.schema.json",
            schemars::schema_for!(model::agent::Command).to_value(),
        ),
        (
            "agent-applied-report.schema.json",
            schemars::schema_for!(model::agent::AppliedReport).to_value(),
        ),
        (
            "agent-deployed-report.schema.json",
            schemars::schema_for!(model::deploy::DeployedReport).to_value(),
        ),
        (
            "agent-cleaned-report.schema.json",
            schemars::schema_for!(model::deploy::CleanedReport).to_value(),
        ),
        (
            "host-report.schema.json",
            schemars::schema_for!(model::deploy::HostReport).to_value(),
        ),
        (
            "host-command.schema.json",
            schemars::schema_for!(model::deploy::HostCommand).to_value(),
        ),
    ]
}

/// A file read and parsed, or `None` (with diagnostics) when it could not be.
struct Parsed {
    rel: PathBuf,
    doc: Option<yaml::Doc>,
}

fn read_and_parse(dir: &Path, rel: &Path, diags: &mut Vec<Diagnostic>) -> Parsed {
    let at_start = |message: String| Diagnostic {
        file: rel.to_owned(),
        line: 1,
        column: 1,
        message,
    };
    let text = match fs::read_to_string(dir.join(rel)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            diags.push(at_start(format!(
                "missing file (looked for {}): a site directory holds site.yaml, nodes.yaml and \
                 profiles/*.yaml",
                dir.join(rel).display()
            )));
            return Parsed {
                rel: rel.to_owned(),
                doc: None,
            };
        }
        Err(e) => {
            diags.push(at_start(format!("cannot read the file: {e}")));
            return Parsed {
                rel: rel.to_owned(),
                doc: None,
            };
        }
    };
    let (doc, errors) = yaml::parse(&text);
    for e in errors {
        diags.push(Diagnostic {
            file: rel.to_owned(),
            line: e.pos.line,
            column: e.pos.column,
            message: e.message,
        });
    }
    Parsed {
        rel: rel.to_owned(),
        doc,
    }
}

/// Loads and validates the site in `dir`. Returns every problem found in
/// every file, sorted by file, line and column.
pub fn load(dir: &Path) -> Result<Site, SiteErrors> {
    let mut diags = Vec::new();

    let site_file = read_and_parse(dir, Path::new("site.yaml"), &mut diags);
    let nodes_file = read_and_parse(dir, Path::new("nodes.yaml"), &mut diags);
    let profile_files = list_profiles(dir, &mut diags)
        .into_iter()
        .map(|rel| read_and_parse(dir, &rel, &mut diags))
        .collect::<Vec<_>>();

    // Image names as written, for profile -> image references; `None` when
    // site.yaml could not be read (then those references are not checked).
    let image_names: Option<Vec<String>> = site_file.doc.as_ref().map(|d| {
        d.value
            .get("images")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.get("name")?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    });

    let config = site_file.doc.as_ref().and_then(|doc| {
        let mut ctx = FileCtx {
            file: site_file.rel.clone(),
            locs: &doc.locs,
            diags: &mut diags,
        };
        config::check(&mut ctx, &doc.value, dir)
    });

    let (profiles, profile_names) =
        check_profiles(&profile_files, image_names.as_deref(), &mut diags);

    let nodes = nodes_file
        .doc
        .as_ref()
        .map(|doc| {
            let mut ctx = FileCtx {
                file: nodes_file.rel.clone(),
                locs: &doc.locs,
                diags: &mut diags,
            };
            let subnet = config.as_ref().map(|c| c.network.address);
            nodes::check(
                &mut ctx,
                &doc.value,
                dir,
                profile_names.as_ref(),
                image_names.as_deref(),
                subnet,
            )
        })
        .unwrap_or_default();

    // iPXE template overrides (`templates/*.ipxe.tera`): checked here so a bad
    // one is refused like any other site error, before a machine asks.
    diags.extend(
        crate::script::check_site_templates(dir)
            .into_iter()
            .map(|p| Diagnostic {
                file: p.file,
                line: p.line,
                column: p.column,
                message: p.message,
            }),
    );

    if !diags.is_empty() {
        diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        return Err(SiteErrors(diags));
    }
    match config {
        Some(config) => Ok(Site {
            dir: dir.to_owned(),
            config,
            nodes,
            profiles,
        }),
        // Unreachable in practice: a missing config always comes with a diagnostic.
        None => Err(SiteErrors(vec![Diagnostic {
            file: "site.yaml".into(),
            line: 1,
            column: 1,
            message: "site.yaml could not be loaded".into(),
        }])),
    }
}

/// Loads and validates one profile file on its own (no image catalog to
/// check against). Diagnostics name `path` as given.
pub fn load_profile(path: &Path) -> Result<Profile, SiteErrors> {
    let mut diags = Vec::new();
    let parsed = read_and_parse(Path::new(""), path, &mut diags);
    let (mut profiles, _) = check_profiles(std::slice::from_ref(&parsed), None, &mut diags);
    match (diags.is_empty(), profiles.pop()) {
        (true, Some(p)) => Ok(p),
        _ => {
            diags.sort_by_key(|d| (d.line, d.column));
            Err(SiteErrors(diags))
        }
    }
}

/// Loads and validates every profile file (`*.yaml`, `*.yml`) directly in
/// `dir`, such as the repository's `profiles/`, with the checks a site gets
/// (duplicate names, certain ties) except the image catalog. Diagnostics
/// name the files as `dir/file`.
pub fn load_profile_dir(dir: &Path) -> Result<Vec<Profile>, SiteErrors> {
    let mut diags = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| {
        SiteErrors(vec![Diagnostic {
            file: dir.to_owned(),
            line: 1,
            column: 1,
            message: format!("cannot read the profile directory: {e}"),
        }])
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            (n.ends_with(".yaml") || n.ends_with(".yml")) && !n.starts_with('.')
        })
        .collect();
    files.sort();
    let parsed: Vec<Parsed> = files
        .iter()
        .map(|f| read_and_parse(Path::new(""), f, &mut diags))
        .collect();
    let (profiles, _) = check_profiles(&parsed, None, &mut diags);
    if diags.is_empty() {
        Ok(profiles)
    } else {
        diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Err(SiteErrors(diags))
    }
}

/// Places problems found in a profile (JSON pointer, message), e.g. by the
/// planner, at their `file:line:column` in the profile file `path` (named
/// as given). A pointer to a field the file does not have points at the
/// nearest enclosing one.
pub fn locate_in_profile(path: &Path, issues: &[(String, String)]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let doc = fs::read_to_string(path)
        .ok()
        .and_then(|text| yaml::parse(&text).0);
    let locs = doc.map(|d| d.locs).unwrap_or_default();
    let mut ctx = FileCtx {
        file: path.to_owned(),
        locs: &locs,
        diags: &mut diags,
    };
    for (pointer, message) in issues {
        ctx.report(pointer, At::Value, message);
    }
    diags
}

/// The profile file (`*.yaml`, `*.yml`) in `dir` whose `name` is `name`.
pub fn find_profile_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files.into_iter().find(|f| {
        fs::read_to_string(f)
            .ok()
            .and_then(|text| yaml::parse(&text).0)
            .is_some_and(|d| d.value.get("name").and_then(Value::as_str) == Some(name))
    })
}

/// `profiles/*.yaml` and `*.yml`, sorted by name, relative to `dir`. A
/// missing `profiles/` directory means no profiles.
fn list_profiles(dir: &Path, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let pdir = dir.join("profiles");
    let entries = match fs::read_dir(&pdir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            diags.push(Diagnostic {
                file: "profiles".into(),
                line: 1,
                column: 1,
                message: format!("cannot read the profiles directory: {e}"),
            });
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| {
            let n = n.to_string_lossy();
            (n.ends_with(".yaml") || n.ends_with(".yml")) && !n.starts_with('.')
        })
        .map(|n| Path::new("profiles").join(n))
        .collect();
    files.sort();
    files
}

/// Checks profile files. Returns the valid profiles and the map of profile
/// name -> where it is defined, or `None` for the map when some profile's
/// name could not be read (so node references are not checked).
fn check_profiles(
    files: &[Parsed],
    image_names: Option<&[String]>,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<Profile>, Option<HashMap<String, String>>) {
    let mut profiles = Vec::new();
    let mut profile_files = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut complete = true;
    for (index, file) in files.iter().enumerate() {
        let Some(doc) = &file.doc else {
            complete = false;
            continue;
        };
        let mut ctx = FileCtx {
            file: file.rel.clone(),
            locs: &doc.locs,
            diags: &mut *diags,
        };
        let before = ctx.diags.len();
        if ctx
            .top_mapping(&doc.value, "a profile has `name`, `match` and `roles`")
            .is_none()
        {
            complete = false;
            continue;
        }
        let raw_name = doc
            .value
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match &raw_name {
            Some(name) => {
                if let Some(first) = names.get(name) {
                    ctx.report(
                        "/name",
                        At::Value,
                        format!(
                            "duplicate profile name {name:?}, first defined at {first}: rename one"
                        ),
                    );
                } else {
                    names.insert(name.clone(), ctx.where_is("/name"));
                }
            }
            None => complete = false,
        }
        let Some(profile) = ctx.de::<Profile>(&doc.value, "") else {
            continue;
        };
        for issue in profile.validate() {
            ctx.report(&issue.pointer, At::Value, issue.message);
        }
        if let (Some(image), Some(known)) = (&profile.image, image_names)
            && !known.contains(image)
        {
            let list = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            ctx.report(
                "/image",
                At::Value,
                format!(
                    "unknown image {image:?}: add it to `images` in site.yaml or use one of: {list}"
                ),
            );
        }
        if ctx.diags.len() == before {
            profiles.push(profile);
            profile_files.push(index);
        }
    }
    // Two profiles with the same selectors and priority tie on every machine
    // that matches them: refuse that here rather than when a machine shows up.
    for (a, b) in crate::plan::matching::certain_ties(&profiles) {
        let (Some(first), Some(doc)) = (&files[profile_files[a]].doc, &files[profile_files[b]].doc)
        else {
            continue;
        };
        let first_at = FileCtx {
            file: files[profile_files[a]].rel.clone(),
            locs: &first.locs,
            diags: &mut Vec::new(),
        }
        .where_is("/match");
        let mut ctx = FileCtx {
            file: files[profile_files[b]].rel.clone(),
            locs: &doc.locs,
            diags: &mut *diags,
        };
        ctx.report(
            "/match",
            At::Key,
            format!(
                "profile {:?} has the same selectors and priority as profile {:?} ({first_at}), \
                 so no machine matching them could choose: change the `priority` of one or \
                 make its `match` more specific",
                profiles[b].name, profiles[a].name
            ),
        );
    }
    (profiles, complete.then_some(names))
}
