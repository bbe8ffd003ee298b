//! `provisioner site ...`: validate and describe a site directory (no daemon),
//! reload and show the daemon's active site.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::client::Client;
use super::output::{Output, print_json, time};
use crate::views;

#[derive(Debug, Subcommand)]
pub(crate) enum SiteCommand {
    /// Check every file of a site directory; print every problem as file:line:column: message.
    Validate {
        /// The site directory.
        dir: PathBuf,
    },
    /// Ask the daemon to reload its site now (it also reloads by itself when files change).
    Reload,
    /// Show the daemon's active site and the last refused change.
    Status {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Write the JSON Schemas of site.yaml, nodes.yaml, profiles, inventories and host plans (for editors and tools) into DIR.
    Schema {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

impl SiteCommand {
    /// Whether the command talks to the daemon.
    pub(crate) fn needs_daemon(&self) -> bool {
        matches!(self, SiteCommand::Reload | SiteCommand::Status { .. })
    }
}

/// The commands that work on the files alone.
pub(crate) fn run_local(command: SiteCommand) -> anyhow::Result<ExitCode> {
    match command {
        SiteCommand::Validate { dir } => Ok(validate(&dir)),
        SiteCommand::Schema { out } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for (name, schema) in crate::site::schemas() {
                let path = out.join(name);
                std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        SiteCommand::Reload | SiteCommand::Status { .. } => {
            unreachable!("the daemon's commands go through `run`")
        }
    }
}

fn validate(dir: &Path) -> ExitCode {
    match crate::site::load(dir) {
        Ok(site) => {
            println!("{}", site.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for diagnostic in &errors.0 {
                println!("{diagnostic}");
            }
            let n = errors.0.len();
            eprintln!(
                "{} invalid: {n} error{}",
                dir.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

/// The commands that talk to the daemon.
pub(crate) async fn run(client: &Client, command: SiteCommand) -> anyhow::Result<()> {
    match command {
        SiteCommand::Reload => {
            let report: views::ReloadReport = client.post("/api/v1/site/reload").await?;
            println!(
                "site reloaded: {} added, {} updated, {} unchanged, {} no longer listed",
                report.added.len(),
                report.updated.len(),
                report.unchanged,
                report.missing.len()
            );
            for name in &report.missing {
                println!(
                    "  {name} is no longer in nodes.yaml (kept; `provisioner node delete {name}` removes it)"
                );
            }
        }
        SiteCommand::Status { output } => {
            let status: views::SiteStatus = client.get("/api/v1/site").await?;
            match output {
                Output::Json => print_json(&status)?,
                Output::Table => {
                    println!("site:    {}", status.dir);
                    println!(
                        "active:  {} (loaded {})",
                        status.summary,
                        time(&status.loaded_at)
                    );
                    if let Some(refused) = &status.refused {
                        println!("refused change at {}:", time(&refused.at));
                        for line in &refused.errors {
                            println!("  {line}");
                        }
                    }
                    for name in &status.missing_nodes {
                        println!("no longer in nodes.yaml: {name}");
                    }
                }
            }
        }
        SiteCommand::Validate { .. } | SiteCommand::Schema { .. } => {
            unreachable!("handled without the daemon")
        }
    }
    Ok(())
}
