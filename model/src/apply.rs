//! The report of applying a host plan to a machine (`node-agent apply`, and
//! the `apply` command of the agent protocol): one item per planned value
//! with its outcome, and every sysfs write in order. The agent makes it; the
//! provisioner stores the last one per node and `provisioner node show`
//! prints it.
//!
//! This module does no I/O.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happened to one item of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Already as planned; nothing written.
    Unchanged,
    /// Written now.
    Changed,
    /// Would be written (dry run).
    WouldChange,
    /// Not something a runtime write can do (a reboot, a module, the
    /// kernel creating VFs): listed so the operator knows.
    Pending,
    /// Could not be applied; `detail` says why and what to do.
    Failed,
}

impl Status {
    /// The word the text report uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unchanged => "unchanged",
            Status::Changed => "changed",
            Status::WouldChange => "would change",
            Status::Pending => "pending",
            Status::Failed => "FAILED",
        }
    }
}

/// One item of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// What this is, e.g. `sriov enp2s0 (0000:02:00.0) sriov_numvfs`.
    pub what: String,
    /// The outcome.
    pub status: Status,
    /// Value found before (when read).
    pub before: Option<String>,
    /// Value the plan wants.
    pub wanted: Option<String>,
    /// Why it failed or is pending, and what to do.
    pub detail: Option<String>,
}

/// One write to a sysfs (or procfs) file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Write {
    /// The file, as an absolute path on the host (`/sys/...`), whatever the root.
    pub path: String,
    /// What was written (without a trailing newline).
    pub value: String,
}

/// The result of applying a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Apply report")]
pub struct ApplyReport {
    /// The plan's profile.
    pub profile: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// One entry per planned value.
    pub items: Vec<Item>,
    /// Every write, in order (in a dry run: the writes that would be made).
    pub writes: Vec<Write>,
}

impl ApplyReport {
    /// Whether any item failed.
    pub fn failed(&self) -> bool {
        self.items.iter().any(|i| i.status == Status::Failed)
    }

    /// Number of items with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.items.iter().filter(|i| i.status == status).count()
    }

    /// One line: `PROFILE: N changed, N unchanged, N pending, N failed`.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} changed, {} unchanged, {} pending, {} failed{}",
            self.profile,
            self.count(Status::Changed) + self.count(Status::WouldChange),
            self.count(Status::Unchanged),
            self.count(Status::Pending),
            self.count(Status::Failed),
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        )
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            write!(f, "{:<12} {}", item.status.as_str(), item.what)?;
            match (&item.before, &item.wanted) {
                (Some(b), Some(w)) if b != w => write!(f, ": {b} -> {w}")?,
                (_, Some(w)) => write!(f, ": {w}")?,
                _ => {}
            }
            if let Some(d) = &item.detail {
                write!(f, " ({d})")?;
            }
            writeln!(f)?;
        }
        write!(f, "{}", self.summary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_round_trips_and_summarises() {
        let report = ApplyReport {
            profile: "lab-compute".into(),
            dry_run: false,
            items: vec![
                Item {
                    what: "sriov enp1s0 (0000:41:00.0) sriov_numvfs".into(),
                    status: Status::Changed,
                    before: Some("0".into()),
                    wanted: Some("7".into()),
                    detail: None,
                },
                Item {
                    what: "sriov enp1s0 vf0 (0000:41:10.0) driver".into(),
                    status: Status::Failed,
                    before: Some("igbvf".into()),
                    wanted: Some("vfio-pci (override vfio-pci)".into()),
                    detail: Some("no IOMMU".into()),
                },
            ],
            writes: vec![Write {
                path: "/sys/bus/pci/devices/0000:41:00.0/sriov_numvfs".into(),
                value: "7".into(),
            }],
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<ApplyReport>(&json).unwrap(), report);
        assert!(report.failed());
        assert_eq!(
            report.summary(),
            "lab-compute: 1 changed, 0 unchanged, 0 pending, 1 failed"
        );
        assert!(report.to_string().contains("FAILED       sriov enp1s0 vf0"));
    }
}
