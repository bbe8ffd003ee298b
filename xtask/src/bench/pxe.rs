//! `cargo xtask bench pxe`: seconds from QEMU start to the iPXE script fetched and to the
//! test initramfs' marker, BIOS and UEFI, through the lab harness (our DHCP, TFTP and HTTP
//! boot in a network namespace), next to a dnsmasq + static HTTP stand-in booted the same way
//! in the same run, and to the stand-in figures of LAB-NOTES.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hardware_tests::lab::{self, Firmware, Lab, LabOptions, VmSpec, assets};

pub const LONG_ABOUT: &str = "\
Boots lab VMs through `provisioner serve` (DHCP, TFTP, HTTP boot) inside a network namespace \
and measures, from QEMU start, when the VM's iPXE script was served and when the test \
initramfs printed its marker on the serial console. BIOS: SeaBIOS with the virtio NIC's iPXE \
ROM. UEFI: OVMF's own PXE client, TFTP snponly.efi, then iPXE. Each VM boots alone (one at a \
time). The peer, in the same run and the same harness: dnsmasq (DHCP with no-ping and \
option 175.176, TFTP from /usr/lib/ipxe) with Python's http.server serving a static script, \
kernel and initramfs. Ratios are ours / peer (below 1: faster). The stand-in figures of \
LAB-NOTES (BIOS 2.5 s / 9.1 s, UEFI native PXE 9.9 s / 15.9 s, an idle machine) are printed \
too, with the load average, since TCG guests slow down on a busy host. Needs root (network namespaces) and the lab's \
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

/// Debian packages of the peer.
const PEER_DEPS: &[crate::deps::Dep] = &[
    crate::deps::Dep {
        package: "dnsmasq-base",
        why: "the stand-in DHCP and TFTP server",
        from_backports: false,
    },
    crate::deps::Dep {
        package: "python3",
        why: "the stand-in HTTP server (http.server)",
        from_backports: false,
    },
];

/// Who serves the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Ours,
    StandIn,
}

/// The stand-in's boot script: the same kernel line as ours, fixed token.
fn stand_in_script(mac: &str) -> String {
    format!(
        "#!ipxe\nkernel http://10.213.0.1:8081/vmlinuz initrd=initramfs console=ttyS0,115200 \
         provisioner.url=http://10.213.0.1:8081 provisioner.token=stand-in provisioner.mac={mac}\n\
         initrd --name initramfs http://10.213.0.1:8081/initramfs\nboot\n"
    )
}

/// dnsmasq as LAB-NOTES ran it: no ping before offers, iPXE's no-pxedhcp, BIOS and UEFI
/// loaders from Debian's ipxe package, iPXE clients sent to the static script.
const DNSMASQ_CONF: &str = "port=0
interface=br0
bind-interfaces
dhcp-range=10.213.0.100,10.213.0.199,1h
no-ping
dhcp-authoritative
dhcp-userclass=set:ipxe,iPXE
dhcp-match=set:efi64,option:client-arch,7
dhcp-boot=tag:ipxe,http://10.213.0.1:8081/boot.ipxe
dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi,,10.213.0.1
dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,10.213.0.1
dhcp-option=encap:175,176,1
enable-tftp
tftp-root=/usr/lib/ipxe
log-dhcp
";

/// Starts dnsmasq and the HTTP server inside the lab's namespace; returns them (killed on
/// drop) and the HTTP server's log, where the script fetch shows.
fn start_stand_in(
    lab: &Lab,
    ramdisk: &assets::TestRamdisk,
    mac: &str,
) -> Result<(Vec<lab::Owned>, PathBuf)> {
    let dir = lab.dir().join("stand-in");
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::copy(&ramdisk.kernel, www.join("vmlinuz"))?;
    std::fs::copy(&ramdisk.initramfs, www.join("initramfs"))?;
    std::fs::write(www.join("boot.ipxe"), stand_in_script(mac))?;
    std::fs::write(dir.join("dnsmasq.conf"), DNSMASQ_CONF)?;
    let log = |name: &str| std::fs::File::create(dir.join(name));
    let dnsmasq = lab
        .netns()
        .command("dnsmasq")
        .arg("--keep-in-foreground")
        .arg(format!(
            "--conf-file={}",
            dir.join("dnsmasq.conf").display()
        ))
        .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .arg("--log-facility=-")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log("dnsmasq.log")?)
        .spawn()
        .context("starting dnsmasq (Debian dnsmasq-base)")?;
    let dnsmasq = lab::Owned::new("dnsmasq", dnsmasq);
    let http_log = dir.join("http.log");
    let http = lab
        .netns()
        .command("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "10.213.0.1",
            "8081",
            "--directory",
        ])
        .arg(&www)
        .stdin(std::process::Stdio::null())
        .stdout(log("http.out")?)
        .stderr(std::fs::File::create(&http_log)?)
        .spawn()
        .context("starting python3 -m http.server")?;
    let http = lab::Owned::new("http.server", http);
    // Ready when the HTTP port accepts and dnsmasq logged its DHCP range.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = lab
            .netns()
            .command("python3")
            .args([
                "-c",
                "import socket; socket.create_connection(('10.213.0.1', 8081), 1)",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?
            .success();
        let dhcp = std::fs::read_to_string(dir.join("dnsmasq.log"))
            .unwrap_or_default()
            .contains("DHCP, IP range");
        if ready && dhcp {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the stand-in did not start; see {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((vec![http, dnsmasq], http_log))
}

/// One boot in a fresh lab: seconds to script fetched, seconds to marker.
fn boot_once(
    server: Server,
    bin: &Path,
    ramdisk: &assets::TestRamdisk,
    firmware: Firmware,
    mac: &str,
) -> Result<(f64, f64)> {
    let mut lab = Lab::start(LabOptions {
        provisioner: Some(bin.to_owned()),
        serve: server == Server::Ours,
        ..LabOptions::default().with_inspect_ramdisk(ramdisk)
    })?;
    let timeouts = (Duration::from_secs(120), Duration::from_secs(180));
    let spec = VmSpec::new("vm0", firmware, mac);
    let times = match server {
        Server::Ours => lab.pxe_boot(spec, timeouts)?,
        Server::StandIn => {
            let (_servers, http_log) = start_stand_in(&lab, ramdisk, mac)?;
            lab.pxe_boot_with(spec, &http_log, &["GET /boot.ipxe"], timeouts)?
        }
    };
    lab.pass();
    Ok((times.script.as_secs_f64(), times.marker.as_secs_f64()))
}

/// The 1-minute load average, as `/proc/loadavg` says.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
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
    crate::deps::ensure(PEER_DEPS, false)?;
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
    let load_before = load_average();
    let mut rows = vec![];
    for (name, firmware, mac, notes) in [
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
        let mut figures = [(vec![], vec![]), (vec![], vec![])];
        for round in 1..=rounds {
            // Alternate who goes first, so a load change does not favour one side.
            let order = if round % 2 == 1 {
                [Server::Ours, Server::StandIn]
            } else {
                [Server::StandIn, Server::Ours]
            };
            for server in order {
                let (script, marker) = boot_once(server, &bin, &ramdisk, firmware, mac)
                    .with_context(|| format!("{name}, {server:?}, boot {round}"))?;
                println!(
                    "  {name}, {server:?}, boot {round}: script {script:.1} s, marker {marker:.1} s"
                );
                let slot = &mut figures[usize::from(server == Server::StandIn)];
                slot.0.push(script);
                slot.1.push(marker);
            }
        }
        let [(ours_script, ours_marker), (peer_script, peer_marker)] = figures;
        rows.push((
            name,
            (median(ours_script), median(ours_marker)),
            (median(peer_script), median(peer_marker)),
            notes,
        ));
    }
    let load_after = load_average();
    println!();
    println!(
        "{:<32}{:>8}{:>8}{:>7}{:>9}{:>8}{:>8}{:>7}{:>9}",
        "median s from QEMU start",
        "script",
        "peer",
        "ratio",
        "(notes)",
        "marker",
        "peer",
        "ratio",
        "(notes)"
    );
    for (name, (script, marker), (peer_script, peer_marker), (note_script, note_marker)) in &rows {
        println!(
            "{name:<32}{script:>8.1}{peer_script:>8.1}{:>7.2}{note_script:>9.1}{marker:>8.1}{peer_marker:>8.1}{:>7.2}{note_marker:>9.1}",
            script / peer_script,
            marker / peer_marker
        );
    }
    println!(
        "peer: dnsmasq + python3 http.server in the same harness and run; (notes): LAB-NOTES \
         stand-in on an idle machine; load average {load_before} before, {load_after} after"
    );
    let json: Vec<String> = rows
        .iter()
        .map(|(name, (s, m), (ps, pm), (ns, nm))| {
            format!("{{\"flow\":{name:?},\"script_s\":{s:.2},\"marker_s\":{m:.2},\"peer_script_s\":{ps:.2},\"peer_marker_s\":{pm:.2},\"notes_script_s\":{ns},\"notes_marker_s\":{nm}}}")
        })
        .collect();
    println!(
        "{{\"bench\":\"pxe\",\"rounds\":{rounds},\"load_before\":{load_before:?},\"load_after\":{load_after:?},\"flows\":[{}]}}",
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
