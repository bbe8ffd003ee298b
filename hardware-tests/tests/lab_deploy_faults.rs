//! Deploy under faults, two rack VMs at once (both UEFI):
//! - lab-storage-0's root disk fails every write that touches 700 MiB with EIO (QEMU
//!   `blkdebug`): its deploy fails with the device error, never `active`;
//! - lab-network-0, in turn:
//!   1. an image whose bytes do not match its manifest (one byte changed): `failed`,
//!      and the disk holds no partition table (it does not boot);
//!   2. powered off in the middle of the write (the power cord, not the BMC): the
//!      operator aborts, deploys again;
//!   3. that deploy loses its network for 20 s in the middle of the download (the
//!      write resumes with `Range`), and the provisioner is killed with SIGKILL and
//!      restarted while the node is deploying: the node still reaches `active`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use hardware_tests::lab::{self, Lab, RackSetup, assets};
use hardware_tests::rack;
use provisioner::lifecycle::State;
use serde_json::Value;

const PASSWORD: (&str, &str) = ("LAB_BMC_PASSWORD", "lab-deploy-faults-secret");
const NETWORK: &str = "lab-network-0";
const STORAGE: &str = "lab-storage-0";

fn cli(lab: &Lab, args: &[&str]) -> Result<()> {
    let out = lab.cli(args)?;
    ensure!(
        out.status.success(),
        "provisioner {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn node_json(lab: &Lab, name: &str) -> Result<Value> {
    let out = lab.cli(&["node", "show", name, "-o", "json"])?;
    ensure!(
        out.status.success(),
        "node show {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Waits until `name`'s agent reports writing with more than `bytes` done.
fn wait_written(lab: &Lab, name: &str, bytes: u64, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let node = node_json(lab, name)?;
        let progress = &node["deploy"]["progress"];
        if progress["phase"] == "writing" && progress["done_bytes"].as_u64() > Some(bytes) {
            return Ok(());
        }
        ensure!(
            node["state"] == "deploying",
            "{name} is {} before writing {bytes} bytes: {:?}",
            node["state"],
            node["last_error"]
        );
        if start.elapsed() > timeout {
            bail!("{name} did not write {bytes} bytes in {timeout:?}: {node:#}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether the disk image holds a GPT header at LBA 1 or at its last LBA.
fn has_gpt(disk: &Path) -> Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(disk)?;
    let mut sector = [0u8; 512];
    file.seek(SeekFrom::Start(512))?;
    file.read_exact(&mut sector)?;
    let primary = &sector[..8] == b"EFI PART";
    file.seek(SeekFrom::End(-512))?;
    file.read_exact(&mut sector)?;
    Ok(primary || &sector[..8] == b"EFI PART")
}

/// The host image with one byte of its compressed disk changed, same size.
fn corrupted_copy(host: &assets::HostImage, dir: &Path) -> Result<PathBuf> {
    let bad = dir.join("bad-host.raw.zst");
    let mut bytes = std::fs::read(host.dir.join("host.raw.zst"))?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&bad, bytes)?;
    Ok(bad)
}

#[test]
fn eio_a_bad_image_a_power_cut_a_network_cut_and_a_daemon_crash() -> Result<()> {
    let ramdisk = assets::inspection_ramdisk()?;
    let host = assets::host_image("1")?;
    let work = tempfile::tempdir()?;
    let rack_file = lab::edited_copy(
        &rack::lab_rack_file(),
        work.path(),
        &[(
            "{kind: virtio, size_gib: 16, serial: LABS0-ROOT}",
            "{kind: virtio, size_gib: 16, serial: LABS0-ROOT, eio_at_mib: 700}",
        )],
    )?;
    let site_file = lab::edited_copy(
        &hardware_tests::lab_site_dir().join("site.yaml"),
        work.path(),
        &[(
            "\nimages:\n",
            "\nimages:\n  # host.raw.zst with one byte changed: it does not match its manifest.\n  \
             - name: bad\n    host: assets/bad/manifest.json\n",
        )],
    )?;
    let bad = corrupted_copy(&host, work.path())?;
    let mut lab = Lab::start_rack(RackSetup {
        nodes: Some(&[NETWORK, STORAGE]),
        rack_file: Some(rack_file),
        site_files: vec![
            (PathBuf::from("site.yaml"), site_file),
            (
                PathBuf::from("assets/bad/manifest.json"),
                host.dir.join("manifest.json"),
            ),
            (PathBuf::from("assets/bad/host.raw.zst"), bad),
        ],
        host_image: Some(&host),
        ..RackSetup::new(&ramdisk, PASSWORD)
    })?;
    for node in [NETWORK, STORAGE] {
        lab.wait_matched(node, Duration::from_secs(400))?;
    }
    let network_disk = lab.dir().join(NETWORK).join("disk0.raw");

    // The disk with EIO at 700 MiB, and the image that does not match its manifest.
    cli(&lab, &["node", "deploy", STORAGE, "--image", "host"])?;
    cli(&lab, &["node", "deploy", NETWORK, "--image", "bad"])?;
    let storage = lab.wait_state(STORAGE, State::Failed, Duration::from_secs(600))?;
    let reason = storage.last_error.unwrap_or_default();
    ensure!(
        reason.contains("Input/output error") && reason.contains("write"),
        "{STORAGE} failed, but not with the device error: {reason}"
    );
    eprintln!("{STORAGE}: failed: {reason}");
    let network = lab.wait_state(NETWORK, State::Failed, Duration::from_secs(600))?;
    let reason = network.last_error.unwrap_or_default();
    ensure!(
        reason.contains("sha256") || reason.contains("SHA-256") || reason.contains("zstd"),
        "{NETWORK} failed, but not because of the image's bytes: {reason}"
    );
    ensure!(
        !has_gpt(&network_disk)?,
        "{NETWORK}: the failed image left a partition table: the disk could boot it"
    );
    eprintln!("{NETWORK}: bad image: failed ({reason}); no partition table on the disk");

    // The power cord in the middle of the write; the operator aborts and deploys again.
    cli(&lab, &["node", "deploy", NETWORK, "--image", "host"])?;
    wait_written(&lab, NETWORK, 200 << 20, Duration::from_secs(400))?;
    lab.rack_vm(NETWORK).context("vm")?.power_off()?;
    eprintln!("{NETWORK}: powered off in the middle of the write");
    ensure!(
        !has_gpt(&network_disk)?,
        "{NETWORK}: a half-written disk has a partition table"
    );
    cli(&lab, &["node", "abort", NETWORK])?;
    lab.wait_state(NETWORK, State::Failed, Duration::from_secs(60))?;

    // Again: the network goes for 20 s mid-download, then the provisioner crashes.
    let redeploy = Instant::now();
    cli(&lab, &["node", "deploy", NETWORK, "--image", "host"])?;
    wait_written(&lab, NETWORK, 100 << 20, Duration::from_secs(400))?;
    lab.rack_vm(NETWORK).context("vm")?.set_link(0, false)?;
    std::thread::sleep(Duration::from_secs(20));
    lab.rack_vm(NETWORK).context("vm")?.set_link(0, true)?;
    eprintln!("{NETWORK}: network back after 20 s");
    wait_written(&lab, NETWORK, 600 << 20, Duration::from_secs(400))?;
    let pid = lab.kill_provisioner().context("the provisioner runs")?;
    eprintln!("{NETWORK}: killed provisioner serve (PID {pid}) with SIGKILL while deploying");
    std::thread::sleep(Duration::from_secs(3));
    lab.serve(None)?;
    lab.wait_state(NETWORK, State::Active, Duration::from_secs(900))?;
    let serial = std::fs::read_to_string(lab.rack_vm(NETWORK).context("vm")?.serial_log())?;
    ensure!(
        serial.contains("Range"),
        "{NETWORK}: the console does not show the download resuming with Range"
    );
    let shown = node_json(&lab, NETWORK)?;
    ensure!(
        shown["deploy"]["host"]["root_hash"] == host.manifest.root.verity.root_hash.as_str(),
        "{NETWORK}: active, but the host reports {:#}",
        shown["deploy"]["host"]
    );
    eprintln!(
        "figure: {NETWORK}: active {:.1} s after the redeploy (20 s network cut and a daemon \
         crash included)",
        redeploy.elapsed().as_secs_f64()
    );
    lab.pass();
    Ok(())
}
