//! Which hardware profile a machine gets: every selector of a profile's
//! `match` must hold on the inventory; among the matching profiles the most
//! specific wins (number of selectors, see
//! [`model::profile::Selectors::specificity`]), then the highest `priority`.
//! A tie that neither breaks is an error naming the tied profiles.
//!
//! Pure: no I/O. Every failed selector is reported with the JSON pointer of
//! the profile field and what the machine has instead, so `provisioner
//! profile match` can say why a profile did not match.

use model::inventory::{Disk, Inventory, Nic};
use model::profile::{DiskSelector, NicSelector, Profile, Selectors};
use serde::Serialize;

const GIB: u64 = 1 << 30;

/// A selector that does not hold on the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// JSON pointer of the selector in the profile, e.g. `/match/cpu/min_cores`.
    pub pointer: String,
    /// What the selector wants and what the machine has.
    pub reason: String,
}

/// The result of matching one profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileResult {
    /// Profile name.
    pub profile: String,
    /// Whether every selector holds.
    pub matches: bool,
    /// Number of selectors (the first tie breaker).
    pub specificity: u32,
    /// The profile's priority (the second tie breaker).
    pub priority: i32,
    /// Why it does not match (empty when it does).
    pub mismatches: Vec<Mismatch>,
}

/// Why no single profile was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MatchError {
    /// No profile matches.
    #[error(
        "no profile matches this machine: see why each profile does not match, then fix a \
         profile's `match` or add a profile"
    )]
    NoMatch,
    /// Two or more profiles match with the same specificity and priority.
    #[error(
        "profiles {} match this machine with the same specificity ({specificity}) and \
         priority ({priority}): raise the `priority` of the one that should win or make its \
         `match` more specific",
        .profiles.join(" and ")
    )]
    Tie {
        /// The tied profiles, by name.
        profiles: Vec<String>,
        /// Their specificity.
        specificity: u32,
        /// Their priority.
        priority: i32,
    },
}

/// Every profile's result (in the order given) and the winner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchReport {
    /// One entry per profile.
    pub results: Vec<ProfileResult>,
    /// The winning profile's name.
    pub chosen: Option<String>,
    /// Why there is no winner (when `chosen` is `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<MatchError>,
}

impl MatchReport {
    /// The winner's name, or why there is none.
    pub fn result(&self) -> Result<&str, &MatchError> {
        match (&self.chosen, &self.error) {
            (Some(name), _) => Ok(name),
            (None, Some(e)) => Err(e),
            (None, None) => Err(&MatchError::NoMatch),
        }
    }
}

/// Checks every selector of `selectors` on `inv`; returns every one that
/// does not hold (empty when the profile matches).
pub fn mismatches(inv: &Inventory, selectors: &Selectors) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut miss = |pointer: &str, reason: String| {
        out.push(Mismatch {
            pointer: pointer.to_owned(),
            reason,
        })
    };
    if let Some(system) = &selectors.system {
        for (field, want, have) in [
            ("vendor", &system.vendor, &inv.system.vendor),
            ("product", &system.product, &inv.system.product),
        ] {
            if let Some(want) = want.as_deref().filter(|w| *w != have.trim()) {
                miss(
                    &format!("/match/system/{field}"),
                    format!("wants {field} {want:?}, the machine has {:?}", have.trim()),
                );
            }
        }
    }
    if let Some(cpu) = &selectors.cpu {
        if let Some(model) = &cpu.model
            && !cpu.model_matches(&inv.cpus.model)
        {
            miss(
                "/match/cpu/model",
                format!(
                    "CPU model {:?} does not contain a match for {model:?}",
                    inv.cpus.model
                ),
            );
        }
        if let Some(min) = cpu.min_cores.filter(|m| inv.cpus.cores < *m) {
            miss(
                "/match/cpu/min_cores",
                format!(
                    "wants at least {min} cores, the machine has {}",
                    inv.cpus.cores
                ),
            );
        }
    }
    if let Some(mem) = &selectors.memory
        && inv.memory_bytes < mem.min_gib.saturating_mul(GIB)
    {
        miss(
            "/match/memory/min_gib",
            format!(
                "wants at least {} GiB of memory, the machine has {}",
                mem.min_gib,
                gib(inv.memory_bytes)
            ),
        );
    }
    for (i, sel) in selectors.nics.iter().enumerate() {
        let have = inv
            .nics
            .iter()
            .filter(|n| !n.is_virtual_function && nic_matches(sel, n))
            .count();
        if have < sel.min_count as usize {
            miss(
                &format!("/match/nics/{i}"),
                format!(
                    "wants at least {} NIC(s){}, the machine has {have}",
                    sel.min_count,
                    describe_nic_selector(sel)
                ),
            );
        }
    }
    for (i, sel) in selectors.disks.iter().enumerate() {
        let have = inv.disks.iter().filter(|d| disk_matches(sel, d)).count();
        if have < sel.min_count as usize {
            miss(
                &format!("/match/disks/{i}"),
                format!(
                    "wants at least {} disk(s){}, the machine has {have}",
                    sel.min_count,
                    describe_disk_selector(sel)
                ),
            );
        }
    }
    out
}

fn nic_matches(sel: &NicSelector, nic: &Nic) -> bool {
    let same = |want: &Option<String>, have: &Option<String>| match want {
        None => true,
        Some(w) => have.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(w)),
    };
    same(&sel.vendor_id, &nic.vendor_id)
        && same(&sel.device_id, &nic.device_id)
        && sel
            .driver
            .as_ref()
            .is_none_or(|d| nic.driver.as_ref() == Some(d))
}

fn disk_matches(sel: &DiskSelector, disk: &Disk) -> bool {
    !disk.removable
        && sel.kind.is_none_or(|k| k == disk.kind)
        && sel.rotational.is_none_or(|r| r == disk.rotational)
        && sel
            .min_size_gb
            .is_none_or(|gb| disk.size_bytes >= gb.saturating_mul(1_000_000_000))
}

fn describe_nic_selector(sel: &NicSelector) -> String {
    let mut parts = Vec::new();
    match (&sel.vendor_id, &sel.device_id) {
        (Some(v), Some(d)) => parts.push(format!("{v}:{d}")),
        (Some(v), None) => parts.push(format!("vendor {v}")),
        _ => {}
    }
    if let Some(d) = &sel.driver {
        parts.push(format!("driver {d}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn describe_disk_selector(sel: &DiskSelector) -> String {
    let mut parts = Vec::new();
    if let Some(k) = sel.kind {
        parts.push(k.to_string());
    }
    match sel.rotational {
        Some(true) => parts.push("rotational".into()),
        Some(false) => parts.push("non-rotational".into()),
        None => {}
    }
    if let Some(gb) = sel.min_size_gb {
        parts.push(format!(">= {gb} GB"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// `bytes` in GiB with one decimal, e.g. `255.6 GiB`.
pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

/// Matches `inv` against every profile and chooses the winner.
pub fn select(inv: &Inventory, profiles: &[Profile]) -> MatchReport {
    let results: Vec<ProfileResult> = profiles
        .iter()
        .map(|p| {
            let mismatches = mismatches(inv, &p.selectors);
            ProfileResult {
                profile: p.name.clone(),
                matches: mismatches.is_empty(),
                specificity: p.selectors.specificity(),
                priority: p.priority,
                mismatches,
            }
        })
        .collect();
    let mut matching: Vec<&ProfileResult> = results.iter().filter(|r| r.matches).collect();
    matching.sort_by(|a, b| {
        (b.specificity, b.priority)
            .cmp(&(a.specificity, a.priority))
            .then_with(|| a.profile.cmp(&b.profile))
    });
    let chosen = match matching.as_slice() {
        [] => Err(MatchError::NoMatch),
        [best, rest @ ..] => {
            let tied: Vec<String> = rest
                .iter()
                .take_while(|r| (r.specificity, r.priority) == (best.specificity, best.priority))
                .map(|r| r.profile.clone())
                .collect();
            if tied.is_empty() {
                Ok(best.profile.clone())
            } else {
                Err(MatchError::Tie {
                    profiles: std::iter::once(best.profile.clone()).chain(tied).collect(),
                    specificity: best.specificity,
                    priority: best.priority,
                })
            }
        }
    };
    let (chosen, error) = match chosen {
        Ok(name) => (Some(name), None),
        Err(e) => (None, Some(e)),
    };
    MatchReport {
        results,
        chosen,
        error,
    }
}

/// Pairs of profiles (indexes into `profiles`, first < second) that can
/// never be told apart: the same `match` and the same `priority`, so every
/// machine that matches one matches both with a tie. `site validate`
/// reports them.
pub fn certain_ties(profiles: &[Profile]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (j, b) in profiles.iter().enumerate() {
        for (i, a) in profiles[..j].iter().enumerate() {
            if a.selectors == b.selectors && a.priority == b.priority {
                out.push((i, j));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures;

    fn profile(json: serde_json::Value) -> Profile {
        serde_json::from_value(json).expect("profile parses")
    }

    #[test]
    fn every_failed_selector_is_explained() {
        let inv = fixtures::inventory("lab-compute");
        let p = profile(serde_json::json!({
            "name": "big", "roles": ["compute"],
            "match": {
                "system": {"vendor": "Dell Inc.", "product": "Standard PC (Q35 + ICH9, 2009)"},
                "cpu": {"model": "EPYC", "min_cores": 64},
                "memory": {"min_gib": 512},
                "nics": [{"vendor_id": "15b3", "min_count": 2}],
                "disks": [{"kind": "nvme", "min_count": 12}]
            }
        }));
        let m = mismatches(&inv, &p.selectors);
        let pointers: Vec<_> = m.iter().map(|m| m.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/match/system/vendor",
                "/match/cpu/model",
                "/match/cpu/min_cores",
                "/match/memory/min_gib",
                "/match/nics/0",
                "/match/disks/0"
            ]
        );
        assert!(m[0].reason.contains("\"QEMU\""), "{}", m[0].reason);
        assert!(m[4].reason.contains("vendor 15b3"), "{}", m[4].reason);
    }

    #[test]
    fn most_specific_wins_then_priority_and_ties_name_both() {
        let inv = fixtures::inventory("lab-compute");
        let any = |name: &str, priority: i32| {
            profile(
                serde_json::json!({"name": name, "priority": priority, "roles": ["compute"],
                                       "match": {}}),
            )
        };
        let qemu = profile(serde_json::json!({"name": "qemu", "roles": ["compute"],
                                              "match": {"system": {"vendor": "QEMU"}}}));
        let report = select(&inv, &[any("any", 100), qemu.clone()]);
        assert_eq!(report.result(), Ok("qemu"));

        let report = select(&inv, &[any("a", 1), any("b", 2)]);
        assert_eq!(report.result(), Ok("b"));

        let report = select(&inv, &[any("a", 1), any("b", 1), qemu]);
        assert_eq!(report.result(), Ok("qemu"));

        let report = select(&inv, &[any("a", 1), any("b", 1)]);
        let err = report.result().unwrap_err().clone();
        assert_eq!(
            err,
            MatchError::Tie {
                profiles: vec!["a".into(), "b".into()],
                specificity: 0,
                priority: 1
            }
        );
        assert!(err.to_string().contains("profiles a and b match"), "{err}");

        let none = profile(serde_json::json!({"name": "none", "roles": ["compute"],
                                              "match": {"memory": {"min_gib": 100000}}}));
        assert_eq!(select(&inv, &[none]).result(), Err(&MatchError::NoMatch));
    }

    #[test]
    fn certain_ties_are_same_selectors_and_priority() {
        let p = |name: &str, priority: i32, vendor: &str| {
            profile(
                serde_json::json!({"name": name, "priority": priority, "roles": ["compute"],
                                       "match": {"system": {"vendor": vendor}}}),
            )
        };
        let profiles = [
            p("a", 0, "QEMU"),
            p("b", 0, "Dell"),
            p("c", 0, "QEMU"),
            p("d", 1, "QEMU"),
        ];
        assert_eq!(certain_ties(&profiles), [(0, 2)]);
    }
}
