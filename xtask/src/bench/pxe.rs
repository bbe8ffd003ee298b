//! `cargo xtask bench pxe`: seconds from QEMU start to the iPXE script fetched and to the
//! test initramfs' marker, BIOS and UEFI, through the lab harness (our DHCP, TFTP and HTTP
//! boot in a network namespace), next to the dnsmasq stand-in figures of LAB-NOTES.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hardware_tests::lab::{self, Firmware, Lab, LabOptions, VmSpec, assets};

pub const LONG_ABOUT: &str = "\
Boots lab VMs through `provisioner serve` (DHCP, TFTP, HTTP boot) inside a network namespace \
and measures, from QEMU start, when the VM's iPXE script was served and when the test \
initramfs printed its marker on the serial console. BIOS: SeaBIOS with the virtio NIC's iPXE \
ROM. UEFI: OVMF's own PXE client, TFTP snponly.efi, then iPXE. Each VM boots alone (one at a \
time) so the figures compare with the stand-in figures measured with dnsmasq on the same \
kind of machine (LAB-NOTES: BIOS 2.5 s / 9.1 s, UEFI native PXE 9.9 s / 15.9 s); the ratio \
column is ours / theirs (below 1: faster). Needs root (network namespaces) and the lab's \
Debian packages (`cargo xtask deps`). KVM is used only when a probe shows it works \
(LAB_ACCEL=tcg|kvm forces one).";

/// dnsmasq stand-in figures from LAB-NOTES (TCG, 1 vCPU): (script fetched, marker) seconds.
const STAND_IN_BIOS: (f64, f64) = (2.5, 9.1);
const STAND_IN_UEFI: (f64, f64) = (9.9, 15.9);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Boots per firmware; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Use this provisioner binary instead of building one (release).
    #[arg(long)]
    provisioner: Option<PathBuf>,
}

/// One boot in a fresh lab: seconds to script fetched, seconds to marker.
fn boot_once(
    bin: &Path,
    ramdisk: &assets::TestRamdisk,
    firmware: Firmware,
    mac: &str,
) -> Result<(f64, f64)> {
    let mut lab = Lab::start(LabOptions {
        provisioner: Some(bin.to_owned()),
        ..LabOptions::default().with_inspect_ramdisk(ramdisk)
    })?;
    let times = lab.pxe_boot(
        VmSpec::new("vm0", firmware, mac),
        (Duration::from_secs(120), Duration::from_secs(180)),
    )?;
    lab.pass();
    Ok((times.script.as_secs_f64(), times.marker.as_secs_f64()))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn run(args: &Args) -> Result<()> {
    let lab_deps: Vec<crate::deps::Dep> = crate::deps::DEPS
        .iter()
        .filter(|d| crate::deps::LAB.contains(&d.package))
        .copied()
        .collect();
    crate::deps::ensure(&lab_deps, false)?;
    let bin = match &args.provisioner {
        Some(bin) => bin.clone(),
        None => super::api::build_provisioner()?,
    };
    let cache = crate::workspace::target_dir()?.join("lab-assets");
    let ramdisk = assets::test_ramdisk(&cache).context("building the lab's test ramdisk")?;
    let rounds = args.rounds.max(1);
    println!(
        "bench pxe: accelerator {:?}, {rounds} boot(s) per firmware",
        lab::accel()
    );
    let mut rows = vec![];
    for (name, firmware, mac, stand_in) in [
        (
            "BIOS (SeaBIOS + iPXE ROM)",
            Firmware::Bios,
            "52:54:00:0d:20:01",
            STAND_IN_BIOS,
        ),
        (
            "UEFI (OVMF PXE -> snponly.efi)",
            Firmware::UefiPxe,
            "52:54:00:0d:20:02",
            STAND_IN_UEFI,
        ),
    ] {
        let mut scripts = vec![];
        let mut markers = vec![];
        for round in 1..=rounds {
            let (script, marker) = boot_once(&bin, &ramdisk, firmware, mac)
                .with_context(|| format!("{name}, boot {round}"))?;
            println!("  {name} boot {round}: script {script:.1} s, marker {marker:.1} s");
            scripts.push(script);
            markers.push(marker);
        }
        rows.push((name, median(scripts), median(markers), stand_in));
    }
    println!();
    println!(
        "{:<34}{:>10}{:>10}{:>8}{:>10}{:>10}{:>8}",
        "median seconds from QEMU start",
        "script",
        "dnsmasq",
        "ratio",
        "marker",
        "dnsmasq",
        "ratio"
    );
    for (name, script, marker, (peer_script, peer_marker)) in &rows {
        println!(
            "{name:<34}{script:>10.1}{peer_script:>10.1}{:>8.2}{marker:>10.1}{peer_marker:>10.1}{:>8.2}",
            script / peer_script,
            marker / peer_marker
        );
    }
    println!(
        "(dnsmasq columns: the stand-in figures of LAB-NOTES, measured on the same kind of machine)"
    );
    let json: Vec<String> = rows
        .iter()
        .map(|(name, s, m, (ps, pm))| {
            format!("{{\"flow\":{name:?},\"script_s\":{s:.2},\"marker_s\":{m:.2},\"peer_script_s\":{ps},\"peer_marker_s\":{pm}}}")
        })
        .collect();
    println!(
        "{{\"bench\":\"pxe\",\"rounds\":{rounds},\"flows\":[{}]}}",
        json.join(",")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 4.0);
        assert_eq!(median(vec![7.5]), 7.5);
    }
}
