//! The site repository: `site.yaml`, `nodes.yaml` and `profiles/*.yaml` in one
//! directory an operator keeps in git. Loading is synchronous and pure apart
//! from reading the files; every problem is reported as a [`Diagnostic`]
//! with `file:line:column`.
//!
//! INTERFACE (owned by the site work; the daemon relies on these names):
//! - `pub fn load(dir: &Path) -> Result<Site, SiteErrors>`
//! - `Site { dir, config: SiteConfig, nodes: Vec<NodeSpec>, profiles: Vec<model::profile::Profile> }`
//! - `NodeSpec { name, bmc: Option<BmcSpec>, boot_mac: Option<MacAddr>, serial, profile, role }`
//! - `SiteErrors(Vec<Diagnostic>)`, `Diagnostic { file, line, column, message }` shown as
//!   `file:line:column: message`
//! - `pub fn schemas() -> Vec<(&'static str, serde_json::Value)>` (file name, JSON Schema)
