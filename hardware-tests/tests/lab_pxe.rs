//! Lab boots: a BIOS VM (SeaBIOS, the virtio NIC's iPXE ROM) and a UEFI VM
//! (OVMF's own PXE client -> TFTP snponly.efi -> iPXE) network-boot through
//! the provisioner's DHCP and TFTP into iPXE, fetch their script over HTTP,
//! boot the lab's test kernel + initramfs from the catalog, and print the
//! marker on the serial console with the per-boot token on the kernel line.
//! The two tests run in parallel, each in its own namespace. The UEFI one runs
//! without router advertisements, as on a real provisioning network (we never
//! send them): Debian's `snponly.efi` then waits for IPv6 autoconfiguration
//! (about 13 s) before asking DHCPv4; its time is printed as a figure.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use hardware_tests::lab::{self, Firmware, Lab, LabOptions, VmSpec, assets};

/// Under TCG the UEFI path takes ~16 s alone; two VMs at once on 2 cores
/// take longer. Generous bounds: a hang fails, a slow machine does not.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);
const MARKER_TIMEOUT: Duration = Duration::from_secs(150);

fn boot(firmware: Firmware, mac: &str, router_advertisements: bool) -> Result<()> {
    let ramdisk =
        assets::test_ramdisk(&assets::cache_dir()?).context("building the test ramdisk")?;
    let mut lab = Lab::start(
        LabOptions {
            router_advertisements,
            ..LabOptions::default()
        }
        .with_inspect_ramdisk(&ramdisk),
    )?;
    let times = lab.pxe_boot(
        VmSpec::new("vm0", firmware, mac),
        (SCRIPT_TIMEOUT, MARKER_TIMEOUT),
    )?;
    eprintln!(
        "figure: {firmware:?} ({:?}, router advertisements {}): script fetched after {:.1} s, \
         marker after {:.1} s",
        lab::accel(),
        if router_advertisements { "on" } else { "off" },
        times.script.as_secs_f64(),
        times.marker.as_secs_f64()
    );
    // The kernel got our command line: the MAC and a token the store knows for it.
    let serial = std::fs::read_to_string(lab.vm(0).serial_log())?;
    let line = serial
        .lines()
        .find(|l| l.contains(assets::MARKER))
        .context("marker line")?;
    ensure!(line.contains(&format!("provisioner.mac={mac}")), "{line}");
    ensure!(
        line.contains("provisioner.url=http://10.213.0.1:8080"),
        "{line}"
    );
    let token = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("provisioner.token="))
        .context("no token on the kernel command line")?;
    let state = lab.dir().join("state");
    let runtime = tokio::runtime::Runtime::new()?;
    let session = runtime.block_on(async {
        let store = provisioner::store::Store::open(&state).await?;
        let session = store.verify_boot_token(token).await;
        store.close().await;
        session
    })?;
    let session = session.context("the token on the kernel line is not the MAC's current token")?;
    ensure!(
        session.mac.to_string() == mac,
        "token issued for {}",
        session.mac
    );
    lab.vm(0).wait_exit(Duration::from_secs(30))?;
    lab.pass();
    Ok(())
}

#[test]
fn bios_vm_pxe_boots_our_kernel() -> Result<()> {
    boot(Firmware::Bios, "52:54:00:0d:10:01", true)
}

#[test]
fn uefi_vm_pxe_boots_our_kernel_without_router_advertisements() -> Result<()> {
    boot(Firmware::UefiPxe, "52:54:00:0d:10:02", false)
}

/// The inspection ramdisk is missing at first: iPXE's `kernel` download
/// fails, the script waits and asks for a fresh script (`?retry=1`) instead
/// of stopping at the iPXE shell; once the files appear, the VM boots.
#[test]
fn a_failed_download_is_retried_until_the_ramdisk_appears() -> Result<()> {
    let mac = "52:54:00:0d:10:03";
    let ramdisk =
        assets::test_ramdisk(&assets::cache_dir()?).context("building the test ramdisk")?;
    let mut lab = Lab::start(LabOptions::default())?;
    let started = lab
        .start_vm(VmSpec::new("vm0", Firmware::Bios, mac))?
        .started;
    lab.wait_log(
        &["iPXE script served", mac, "retry=0"],
        started,
        SCRIPT_TIMEOUT,
    )?;
    let retried = lab.wait_log(
        &["iPXE script served", mac, "retry=1"],
        started,
        SCRIPT_TIMEOUT,
    )?;
    let inspect = lab.dir().join("site/assets/inspect");
    std::fs::create_dir_all(&inspect)?;
    std::fs::copy(&ramdisk.kernel, inspect.join("vmlinuz"))?;
    std::fs::copy(&ramdisk.initramfs, inspect.join("initramfs"))?;
    let marker = lab.vm(0).wait_serial(assets::MARKER, MARKER_TIMEOUT)?;
    eprintln!(
        "retry after {:.1} s, marker after {:.1} s",
        retried.as_secs_f64(),
        marker.as_secs_f64()
    );
    lab.pass();
    Ok(())
}
