//! `node-agent apply`: makes the running host match a [`HostPlan`] where
//! that can be done at runtime (SR-IOV VFs and their driver, PF MTU,
//! hugepages per NUMA node), checks what needs a reboot (kernel
//! arguments), and reports every item against the plan.
//!
//! Idempotent: a value already right is left alone, so a second run
//! writes nothing. Never a silent partial success: an item that cannot be
//! applied is `failed` with the reason, and the command exits non-zero.
//! All host access goes through [`SysRoot`], so tests run on a fake tree.

use model::plan::{DeviceType, HostPlan, NodeHugepages, SriovPlan};

pub use model::apply::{ApplyReport as Report, Item, Status};

use crate::sysroot::SysRoot;

/// Collects items while applying.
struct Run<'a> {
    sys: &'a mut SysRoot,
    items: Vec<Item>,
}

impl Run<'_> {
    fn item(
        &mut self,
        what: impl Into<String>,
        status: Status,
        before: Option<String>,
        wanted: Option<String>,
        detail: Option<String>,
    ) {
        self.items.push(Item {
            what: what.into(),
            status,
            before,
            wanted,
            detail,
        });
    }

    fn changed(&self) -> Status {
        if self.sys.dry_run() {
            Status::WouldChange
        } else {
            Status::Changed
        }
    }

    /// Writes `values` in order to `path`, recording one item for the whole
    /// sequence; stops at the first failed write.
    fn set(&mut self, what: &str, path: &str, before: Option<String>, values: &[&str]) {
        let wanted = values.last().map(|v| (*v).to_owned());
        let steps: Vec<(&str, &str)> = values.iter().map(|value| (path, *value)).collect();
        self.write_steps(what, before, wanted, &steps);
    }

    /// Performs `(path, value)` writes in order, recording one item for the
    /// whole sequence; stops at the first failed write.
    fn write_steps(
        &mut self,
        what: &str,
        before: Option<String>,
        wanted: Option<String>,
        steps: &[(&str, &str)],
    ) {
        for (path, value) in steps {
            if let Err(e) = self.sys.write(path, value) {
                self.item(
                    what,
                    Status::Failed,
                    before,
                    wanted,
                    Some(format!("writing {value:?} to {path} failed: {e}")),
                );
                return;
            }
        }
        let status = self.changed();
        self.item(what, status, before, wanted, None);
    }
}

/// Applies `plan` to the host under `sys`.
pub fn apply(plan: &HostPlan, sys: &mut SysRoot) -> Report {
    let mut run = Run {
        sys,
        items: Vec::new(),
    };
    for vf in &plan.sriov {
        apply_sriov(&mut run, vf);
    }
    for hp in &plan.hugepages {
        apply_hugepages(&mut run, hp);
    }
    check_kernel_args(&mut run, &plan.kernel_args);
    let dry_run = run.sys.dry_run();
    let items = run.items;
    Report {
        profile: plan.profile.clone(),
        dry_run,
        items,
        writes: sys.writes().to_vec(),
    }
}

/// The `sriov_numvfs` values to write to go from `current` to `wanted`: the
/// kernel refuses to change a non-zero count directly, so go through 0.
pub fn numvfs_sequence(current: u64, wanted: u64) -> Vec<u64> {
    if current == wanted {
        Vec::new()
    } else if current == 0 || wanted == 0 {
        vec![wanted]
    } else {
        vec![0, wanted]
    }
}

fn apply_sriov(run: &mut Run<'_>, vf: &SriovPlan) {
    let dev = format!("/sys/bus/pci/devices/{}", vf.pci_address);
    let name = format!("sriov {} ({})", vf.pf_name, vf.pci_address);
    if !run.sys.exists(&dev) {
        run.item(
            name,
            Status::Failed,
            None,
            None,
            Some(format!(
                "no PCI device {}: is this the machine the plan was made for? Re-inspect it",
                vf.pci_address
            )),
        );
        return;
    }
    // The PF's interface name, when the host has it, must be the planned device.
    let net_dev = format!("/sys/class/net/{}/device", vf.pf_name);
    if let Some(addr) = run.sys.link_name(&net_dev)
        && addr != vf.pci_address
    {
        run.item(
            format!("{name} interface"),
            Status::Failed,
            Some(addr.clone()),
            Some(vf.pci_address.clone()),
            Some(format!(
                "interface {} is device {addr}, not {}: interface names changed since \
                     inspection; re-inspect and re-plan",
                vf.pf_name, vf.pci_address
            )),
        );
        return;
    }
    let numvfs_path = format!("{dev}/sriov_numvfs");
    let total = run.sys.read_u64(&format!("{dev}/sriov_totalvfs"));
    let current = run.sys.read_u64(&numvfs_path);
    let (total, current) = match (total, current) {
        (Ok(t), Ok(c)) => (t, c),
        (Err(e), _) | (_, Err(e)) => {
            run.item(
                format!("{name} sriov_numvfs"),
                Status::Failed,
                None,
                Some(vf.num_vfs.to_string()),
                Some(format!(
                    "cannot read the SR-IOV state of {}: {e}; enable SR-IOV in the firmware",
                    vf.pci_address
                )),
            );
            return;
        }
    };
    let wanted = u64::from(vf.num_vfs);
    if wanted > total {
        run.item(
            format!("{name} sriov_numvfs"),
            Status::Failed,
            Some(current.to_string()),
            Some(wanted.to_string()),
            Some(format!(
                "the device supports {total} VFs (sriov_totalvfs): re-inspect and re-plan"
            )),
        );
        return;
    }
    let sequence: Vec<String> = numvfs_sequence(current, wanted)
        .iter()
        .map(u64::to_string)
        .collect();
    let what = format!("{name} sriov_numvfs");
    let wrote_count = !sequence.is_empty();
    if sequence.is_empty() {
        run.item(
            what,
            Status::Unchanged,
            Some(current.to_string()),
            Some(wanted.to_string()),
            None,
        );
    } else {
        let values: Vec<&str> = sequence.iter().map(String::as_str).collect();
        run.set(&what, &numvfs_path, Some(current.to_string()), &values);
    }

    if let Some(mtu) = vf.mtu {
        let path = format!("/sys/class/net/{}/mtu", vf.pf_name);
        let what = format!("sriov {} mtu", vf.pf_name);
        match run.sys.read(&path) {
            Ok(cur) if cur == mtu.to_string() => run.item(
                what,
                Status::Unchanged,
                Some(cur),
                Some(mtu.to_string()),
                None,
            ),
            Ok(cur) => run.set(&what, &path, Some(cur), &[&mtu.to_string()]),
            Err(e) => run.item(
                what,
                Status::Failed,
                None,
                Some(mtu.to_string()),
                Some(format!(
                    "cannot read {path}: {e}; is interface {} present?",
                    vf.pf_name
                )),
            ),
        }
    }

    // The VFs the kernel created (virtfnN links), in N order.
    let mut vfs: Vec<(u32, String)> = run
        .sys
        .list(&dev)
        .into_iter()
        .filter_map(|n| {
            let i: u32 = n.strip_prefix("virtfn")?.parse().ok()?;
            Some((i, run.sys.link_name(&format!("{dev}/{n}"))?))
        })
        .collect();
    vfs.sort();
    if vfs.len() as u64 != wanted {
        let detail = if run.sys.dry_run() && wrote_count {
            "the kernel creates the VFs when sriov_numvfs is written (dry run)".to_owned()
        } else {
            format!(
                "the kernel shows {} VF(s) after sriov_numvfs = {wanted}: check `dmesg` for \
                 SR-IOV errors (firmware, BIOS SR-IOV setting, PCI resources)",
                vfs.len()
            )
        };
        let status = if run.sys.dry_run() {
            Status::Pending
        } else {
            Status::Failed
        };
        run.item(
            format!("{name} VFs present"),
            status,
            Some(vfs.len().to_string()),
            Some(wanted.to_string()),
            Some(detail),
        );
    }
    for (i, addr) in vfs.into_iter().take(wanted as usize) {
        bind_vf(run, vf, i, &addr);
    }
}

/// Binds one VF to the planned driver through `driver_override`.
fn bind_vf(run: &mut Run<'_>, vf: &SriovPlan, index: u32, addr: &str) {
    let dev = format!("/sys/bus/pci/devices/{addr}");
    let override_path = format!("{dev}/driver_override");
    let what = format!("sriov {} vf{index} ({addr}) driver", vf.pf_name);
    let over = run.sys.read(&override_path).unwrap_or_default();
    let over = if over == "(null)" {
        String::new()
    } else {
        over
    };
    let bound = run.sys.link_name(&format!("{dev}/driver"));
    let (wanted_override, wanted_driver) = match vf.device_type {
        DeviceType::VfioPci => ("vfio-pci", Some("vfio-pci")),
        // netdevice: no override; whatever VF driver the kernel picks.
        DeviceType::Netdevice => ("", None),
    };
    let wrong_driver = match wanted_driver {
        Some(w) => bound.as_deref().is_some_and(|b| b != w),
        None => bound.as_deref() == Some("vfio-pci"),
    };
    let before = Some(match (bound.as_deref(), over.is_empty()) {
        (Some(driver), true) => driver.to_owned(),
        (Some(driver), false) => format!("{driver} (override {over})"),
        (None, true) => "none".to_owned(),
        (None, false) => format!("none (override {over})"),
    });
    let wanted = Some(match wanted_driver {
        Some(driver) => format!("{driver} (override {wanted_override})"),
        None => match bound.as_deref() {
            Some(driver) if driver != "vfio-pci" => driver.to_owned(),
            _ => "its VF driver (no override)".to_owned(),
        },
    });
    if over == wanted_override && !wrong_driver {
        if wanted_driver.is_some() && bound.is_none() {
            run.item(
                what,
                Status::Pending,
                before,
                wanted,
                Some("driver_override is set but no driver is bound: load the module (`modprobe vfio-pci`) and write the VF address to /sys/bus/pci/drivers_probe".into()),
            );
        } else {
            run.item(what, Status::Unchanged, before, wanted, None);
        }
        return;
    }
    let mut steps: Vec<(String, String)> = Vec::new();
    if over != wanted_override {
        steps.push((override_path, wanted_override.to_owned()));
    }
    if let Some(driver) = bound.as_deref().filter(|_| wrong_driver) {
        steps.push((
            format!("/sys/bus/pci/drivers/{driver}/unbind"),
            addr.to_owned(),
        ));
    }
    if wrong_driver || bound.is_none() {
        steps.push(("/sys/bus/pci/drivers_probe".to_owned(), addr.to_owned()));
    }
    let steps: Vec<(&str, &str)> = steps
        .iter()
        .map(|(p, v)| (p.as_str(), v.as_str()))
        .collect();
    run.write_steps(&what, before, wanted, &steps);
}

fn apply_hugepages(run: &mut Run<'_>, hp: &NodeHugepages) {
    let path = format!(
        "/sys/devices/system/node/node{}/hugepages/hugepages-{}kB/nr_hugepages",
        hp.node, hp.size_kb
    );
    let what = format!("hugepages node {} {} kB", hp.node, hp.size_kb);
    let current = match run.sys.read_u64(&path) {
        Ok(c) => c,
        Err(e) => {
            run.item(
                what,
                Status::Failed,
                None,
                Some(hp.count.to_string()),
                Some(format!(
                    "cannot read {path}: {e}; does the kernel support {} kB pages on node {}?",
                    hp.size_kb, hp.node
                )),
            );
            return;
        }
    };
    if current == hp.count {
        run.item(
            what,
            Status::Unchanged,
            Some(current.to_string()),
            Some(hp.count.to_string()),
            None,
        );
        return;
    }
    if let Err(e) = run.sys.write(&path, &hp.count.to_string()) {
        run.item(
            what,
            Status::Failed,
            Some(current.to_string()),
            Some(hp.count.to_string()),
            Some(format!("writing {path} failed: {e}")),
        );
        return;
    }
    if !run.sys.dry_run() {
        // The kernel allocates what it can and says so in the same file.
        let got = run.sys.read_u64(&path).unwrap_or(0);
        if got != hp.count {
            run.item(
                what,
                Status::Failed,
                Some(current.to_string()),
                Some(hp.count.to_string()),
                Some(format!(
                    "the kernel allocated {got} pages: memory is fragmented; boot with the \
                     plan's hugepages= kernel arguments so the pages are reserved at boot"
                )),
            );
            return;
        }
    }
    let status = run.changed();
    run.item(
        what,
        status,
        Some(current.to_string()),
        Some(hp.count.to_string()),
        None,
    );
}

fn check_kernel_args(run: &mut Run<'_>, args: &[String]) {
    if args.is_empty() {
        return;
    }
    let Ok(cmdline) = run.sys.read("/proc/cmdline") else {
        run.item(
            "kernel args",
            Status::Pending,
            None,
            Some(args.join(" ")),
            Some("cannot read /proc/cmdline; the boot entry must carry these".into()),
        );
        return;
    };
    let present: Vec<&str> = cmdline.split_whitespace().collect();
    let missing: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !present.contains(a))
        .collect();
    if missing.is_empty() {
        run.item(
            "kernel args",
            Status::Unchanged,
            None,
            Some(args.join(" ")),
            None,
        );
    } else {
        run.item(
            "kernel args",
            Status::Pending,
            None,
            Some(missing.join(" ")),
            Some(
                "not on the running kernel's command line; they take effect when the host \
                 boots with them from the host image's boot entry"
                    .into(),
            ),
        );
    }
}

#[cfg(test)]
mod tests;
