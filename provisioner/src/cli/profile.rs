//! `provisioner profile match|plan`: which hardware profile fits a machine, and
//! its host plan, from an inventory file (no daemon).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use model::inventory::Inventory;
use model::profile::Profile;

use super::output::Output;
use crate::plan::{self, matching, render};
use crate::site;

#[derive(Debug, Subcommand)]
pub(crate) enum ProfileCommand {
    /// Say which profile matches a machine, and why each other profile does not.
    #[command(
        after_help = "Example:\n  provisioner profile match --inventory node.json --site ./site"
    )]
    Match {
        /// The machine's inventory (JSON, as the agent's inspection reports it).
        #[arg(long, value_name = "FILE")]
        inventory: PathBuf,
        #[command(flatten)]
        source: ProfileSet,
        /// Print a text report (table) or the match report as JSON.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Compute a machine's host plan: kernel arguments, reserved and isolated CPUs,
    /// hugepages per NUMA node, SR-IOV VFs, root and data disks.
    #[command(
        after_help = "Examples:\n  provisioner profile plan --inventory node.json --profile profiles/compute-intel-e810.yaml\n  provisioner profile plan --inventory node.json --site ./site -o json"
    )]
    Plan {
        /// The machine's inventory (JSON, as the agent's inspection reports it).
        #[arg(long, value_name = "FILE")]
        inventory: PathBuf,
        #[command(flatten)]
        source: PlanSource,
        /// Print the plan as text (table) or as the JSON that `node-agent apply --plan` reads.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

/// Where the candidate profiles come from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct ProfileSet {
    /// A site directory: the whole site is validated and its profiles/*.yaml are the candidates.
    #[arg(long, value_name = "DIR")]
    site: Option<PathBuf>,
    /// A directory of profile files (e.g. the repository's profiles/).
    #[arg(long, value_name = "DIR")]
    profiles: Option<PathBuf>,
}

/// Which profile to plan with: one file, or the one that matches among a set.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct PlanSource {
    /// Plan with this profile file (when its `match` does not hold on the machine, a
    /// warning says why, and the plan is made anyway).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Plan with the profile of this site that matches the machine.
    #[arg(long, value_name = "DIR")]
    site: Option<PathBuf>,
    /// Plan with the profile of this directory that matches the machine.
    #[arg(long, value_name = "DIR")]
    profiles: Option<PathBuf>,
}

/// Reads an inventory file; a bad field is named by its path.
fn read_inventory(path: &Path) -> anyhow::Result<Inventory> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the inventory {}", path.display()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        anyhow::anyhow!(
            "{}: {}{}: give the inventory JSON that `node-agent inspect` writes (schema: \
             provisioner/schemas/inventory.schema.json)",
            path.display(),
            if at == "." {
                String::new()
            } else {
                format!("at {at}: ")
            },
            e.inner()
        )
    })
}

/// The candidate profiles and the directory their files are in.
fn load_profile_set(
    site_dir: Option<&Path>,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<(Vec<Profile>, PathBuf)> {
    let invalid = |what: &Path, e: site::SiteErrors| {
        anyhow::anyhow!("{e}\n{} is invalid: fix the errors above", what.display())
    };
    match (site_dir, profiles_dir) {
        (Some(dir), _) => {
            let site = site::load(dir).map_err(|e| invalid(dir, e))?;
            Ok((site.profiles, dir.join("profiles")))
        }
        (None, Some(dir)) => {
            let profiles = site::load_profile_dir(dir).map_err(|e| invalid(dir, e))?;
            Ok((profiles, dir.to_owned()))
        }
        (None, None) => bail!("give --site DIR or --profiles DIR"),
    }
}

pub(crate) fn run(command: ProfileCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProfileCommand::Match {
            inventory,
            source,
            output,
        } => {
            let inv = read_inventory(&inventory)?;
            let (profiles, _) =
                load_profile_set(source.site.as_deref(), source.profiles.as_deref())?;
            let report = matching::select(&inv, &profiles);
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Table => print!("{}", render::match_report(&inv, &report)),
            }
            Ok(if report.chosen.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ProfileCommand::Plan {
            inventory,
            source,
            output,
        } => {
            let inv = read_inventory(&inventory)?;
            let (profile, file) = match &source.profile {
                Some(file) => {
                    let profile = site::load_profile(file).map_err(|e| {
                        anyhow::anyhow!("{e}\n{} is invalid: fix the errors above", file.display())
                    })?;
                    let mismatches: Vec<(String, String)> =
                        matching::mismatches(&inv, &profile.selectors)
                            .into_iter()
                            .map(|m| (m.pointer, m.reason))
                            .collect();
                    for d in site::locate_in_profile(file, &mismatches) {
                        eprintln!(
                            "warning: {d} (the profile's match does not hold on this machine; \
                             planning anyway)"
                        );
                    }
                    (profile, Some(file.clone()))
                }
                None => {
                    let (profiles, dir) =
                        load_profile_set(source.site.as_deref(), source.profiles.as_deref())?;
                    let report = matching::select(&inv, &profiles);
                    let name = match report.chosen.clone() {
                        Some(name) => name,
                        None => {
                            eprint!("{}", render::match_report(&inv, &report));
                            bail!(
                                "no single profile for this machine (see above): fix the \
                                 profiles' `match`, or plan with --profile FILE"
                            );
                        }
                    };
                    let file = site::find_profile_file(&dir, &name);
                    let profile = profiles
                        .into_iter()
                        .find(|p| p.name == name)
                        .context("the chosen profile is in the set")?;
                    (profile, file)
                }
            };
            match plan::plan(&inv, &profile) {
                Ok(plan) => {
                    match output {
                        Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
                        Output::Table => print!("{}", render::plan(&plan)),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    let issues: Vec<(String, String)> = err
                        .issues
                        .iter()
                        .map(|i| (i.pointer.clone(), i.message.clone()))
                        .collect();
                    match &file {
                        Some(file) => {
                            for d in site::locate_in_profile(file, &issues) {
                                eprintln!("{d}");
                            }
                        }
                        None => {
                            for i in &err.issues {
                                eprintln!("{i}");
                            }
                        }
                    }
                    bail!(
                        "profile {} cannot be planned on the machine of {}: fix the fields above \
                         (or the inventory, if it is wrong)",
                        err.profile,
                        inventory.display()
                    )
                }
            }
        }
    }
}
