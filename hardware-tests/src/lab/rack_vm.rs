//! Rack VMs in the lab: QEMU started from [`crate::rack::qemu_args`] (powered off,
//! `-S`), one tap per NIC on br0, sparse disk images, and the VM's virtual BMC
//! listening on the lab bridge (our Redfish `lab-vbmc`, or OpenIPMI's `ipmi_sim`
//! with `ipmi-qemu-hook`), so the provisioner powers and boots it like a real
//! server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use std::os::unix::fs::PermissionsExt as _;

use super::assets::{HostImage, TestRamdisk};
use super::process::Owned;
use super::vm::{OVMF_CODE, ovmf_vars, spawn_qemu, wait_marker};
use super::{Lab, LabError, LabOptions, accel, io, sibling_binary};
use crate::rack::{self, BmcKind, Firmware, VmPaths, VmSpec};

pub use crate::rack::BMC_ADDRESS;

/// What [`Lab::start_rack`] starts.
#[derive(Debug, Clone)]
pub struct RackSetup<'a> {
    /// The inspection ramdisk the lab site's inspection image points to.
    pub ramdisk: &'a TestRamdisk,
    /// The BMC password: (nodes.yaml's `password_env`, its value).
    pub password: (&'a str, &'a str),
    /// The VMs to start, by name (default: every VM of the rack file).
    pub nodes: Option<&'a [&'a str]>,
    /// The rack file (default: the lab rack, [`rack::lab_rack_file`]). Its VMs
    /// must match the site's nodes.yaml (replace it through `site_files`).
    pub rack_file: Option<PathBuf>,
    /// Files to place in the lab's site copy: (path inside the site, source).
    pub site_files: Vec<(PathBuf, PathBuf)>,
    /// The `provisioner` binary (default: [`super::provisioner_binary`]).
    pub provisioner: Option<PathBuf>,
    /// Start `provisioner serve` once the VMs are up (default on). Off: the
    /// caller prepares the VMs (e.g. a NIC link down) and calls [`Lab::serve`].
    pub serve: bool,
    /// A host image to deploy: added to the site's catalog as `host`
    /// (`assets/host/`), its signing key placed in the provisioner's STATE.
    pub host_image: Option<&'a HostImage>,
}

impl<'a> RackSetup<'a> {
    /// Every VM of the lab rack, the default provisioner, served at once.
    pub fn new(ramdisk: &'a TestRamdisk, password: (&'a str, &'a str)) -> Self {
        RackSetup {
            ramdisk,
            password,
            nodes: None,
            rack_file: None,
            site_files: vec![],
            provisioner: None,
            serve: true,
            host_image: None,
        }
    }
}

/// What the harness asks a rack VM's QEMU behind the BMC's back.
#[derive(Debug, Clone, Copy)]
enum QmpRequest {
    SetLink { nic: usize, up: bool },
    PowerOff,
}

/// A rack VM and its BMC; both killed (by PID) on drop.
#[derive(Debug)]
pub struct RackVm {
    pub spec: VmSpec,
    /// The VM's directory (serial.log, qemu.log, bmc.log, disks, VARS copy).
    pub dir: PathBuf,
    /// When QEMU was spawned (powered off: the BMC powers it on).
    pub started: Instant,
    // Field order is drop order: the BMC goes before its VM.
    bmc: Owned,
    qemu: Owned,
}

impl RackVm {
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// The harness's own QMP socket (the BMC has another).
    pub fn test_qmp(&self) -> PathBuf {
        self.dir.join("test.qmp")
    }

    /// Runs `request` over the harness's QMP socket; `what` names it in errors.
    fn with_qmp(&self, what: &str, request: QmpRequest) -> Result<(), LabError> {
        let socket = self.test_qmp();
        let failed = |e: String| {
            LabError::Missing(format!(
                "{}: {what} over {}: {e}",
                self.spec.name,
                socket.display()
            ))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting a runtime for QMP"))?;
        runtime.block_on(async {
            let qmp = crate::qmp::Qmp::connect(&socket)
                .await
                .map_err(|e| failed(e.to_string()))?;
            match request {
                QmpRequest::PowerOff => qmp.power_off().await,
                QmpRequest::SetLink { nic, up } => qmp
                    .execute(
                        "set_link",
                        serde_json::json!({"name": rack::nic_id(nic), "up": up}),
                    )
                    .await
                    .map(drop),
            }
            .map_err(|e| failed(e.to_string()))
        })
    }

    /// Sets the link of NIC `nic` (its index in rack.yaml) up or down through the
    /// harness's QMP socket, as a pulled cable or a dead switch port would.
    pub fn set_link(&self, nic: usize, up: bool) -> Result<(), LabError> {
        self.with_qmp(
            &format!("set_link {} {up}", rack::nic_id(nic)),
            QmpRequest::SetLink { nic, up },
        )
    }

    /// Powers the VM off behind its BMC's back (a pulled power cord): the
    /// vCPUs stop where they are; the BMC sees it off and powers it on again.
    pub fn power_off(&self) -> Result<(), LabError> {
        self.with_qmp("power off", QmpRequest::PowerOff)
    }

    /// Waits until the serial console shows `marker`; the time since QEMU started.
    pub fn wait_serial(&mut self, marker: &str, timeout: Duration) -> Result<Duration, LabError> {
        let serial = self.serial_log();
        wait_marker(
            &mut self.qemu,
            &serial,
            &self.spec.name,
            marker,
            self.started,
            timeout,
        )
    }
}

impl Lab {
    /// A lab running a rack ([`RackSetup`]): its VMs started powered off behind
    /// their BMCs, then (unless `serve` is off) `provisioner serve` with the setup's
    /// ramdisk as its inspection image. BMCs and provisioner share the password
    /// (nodes.yaml's `password_env` and its value), so nobody touches the VMs but
    /// the executor.
    pub fn start_rack(setup: RackSetup<'_>) -> Result<Lab, LabError> {
        let mut site_files = setup.site_files.clone();
        if let Some(host) = setup.host_image {
            for file in ["manifest.json", "host.raw.zst"] {
                site_files.push((Path::new("assets/host").join(file), host.dir.join(file)));
            }
        }
        let mut lab = Lab::start(
            LabOptions {
                serve: false,
                env: vec![(setup.password.0.into(), setup.password.1.into())],
                site_files,
                ..LabOptions::default()
            }
            .with_inspect_ramdisk(setup.ramdisk),
        )?;
        if let Some(host) = setup.host_image {
            lab.add_host_image(host)?;
        }
        let rack_file = setup.rack_file.clone().unwrap_or_else(rack::lab_rack_file);
        let rack = rack::load(&rack_file).map_err(|e| LabError::Missing(e.to_string()))?;
        let wanted: Vec<&VmSpec> = match setup.nodes {
            None => rack.vms.iter().collect(),
            Some(names) => names
                .iter()
                .map(|name| {
                    rack.vms.iter().find(|v| v.name == *name).ok_or_else(|| {
                        LabError::Missing(format!("no VM {name} in {}", rack_file.display()))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        for spec in wanted {
            lab.start_rack_vm(&rack_file, spec, setup.password)?;
        }
        if setup.serve {
            lab.serve(setup.provisioner)?;
        }
        Ok(lab)
    }

    /// Adds `host` (already copied to the site's `assets/host/`) to the site's
    /// image catalog as `host`, and its key pair to the provisioner's STATE
    /// (`config-signing.key`, mode 0600, and `.pub`), before `serve`.
    fn add_host_image(&mut self, host: &HostImage) -> Result<(), LabError> {
        let site_yaml = self.site().join("site.yaml");
        let edited = super::edited_copy(
            &site_yaml,
            self.dir(),
            &[(
                "\nimages:\n",
                "\nimages:\n  # The host image deployed by `provisioner node deploy NAME --image host`.\n  \
                 - name: host\n    host: assets/host/manifest.json\n",
            )],
        )?;
        std::fs::rename(&edited, &site_yaml).map_err(io("replacing the site's site.yaml"))?;
        let state = self.dir().join("state");
        std::fs::create_dir_all(&state).map_err(io(format!("creating {}", state.display())))?;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod 0700 STATE"))?;
        for (source, name) in [
            (&host.signing_key, "config-signing.key"),
            (&host.public_key, "config-signing.pub"),
        ] {
            std::fs::copy(source, state.join(name))
                .map_err(io(format!("copying {} into STATE", source.display())))?;
        }
        Ok(())
    }

    /// Starts a rack VM powered off, with its virtual BMC on the lab bridge. The BMC
    /// reads the VM from `rack_file` and its password from `password` (the value the
    /// site's `password_env` names).
    pub fn start_rack_vm(
        &mut self,
        rack_file: &Path,
        spec: &VmSpec,
        password: (&str, &str),
    ) -> Result<&mut RackVm, LabError> {
        let dir = self.dir().join(&spec.name);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let mut taps = vec![];
        for _ in &spec.nics {
            taps.push(self.new_tap()?);
        }
        let mut disks = vec![];
        for (i, disk) in spec.disks.iter().enumerate() {
            let path = dir.join(format!("disk{i}.raw"));
            std::fs::File::create(&path)
                .and_then(|f| f.set_len(disk.size_gib << 30))
                .map_err(io(format!("creating the sparse disk {}", path.display())))?;
            if let Some(rules) = disk.blkdebug_rules() {
                std::fs::write(rack::blkdebug_file(&path), rules)
                    .map_err(io("writing the disk's blkdebug rules"))?;
            }
            disks.push(path);
        }
        let ovmf = match spec.firmware {
            Firmware::Bios => None,
            Firmware::Uefi => {
                let vars = ovmf_vars(&dir)?;
                Some((PathBuf::from(OVMF_CODE), vars))
            }
        };
        let bmc_qmp = dir.join("bmc.qmp");
        let paths = VmPaths {
            taps,
            disks,
            serial_log: dir.join("serial.log"),
            qmp: vec![bmc_qmp.clone(), dir.join("test.qmp")],
            ovmf,
            accel: accel().qemu_arg().into(),
        };
        let started = Instant::now();
        let qemu = spawn_qemu(
            self.netns()
                .command("qemu-system-x86_64")
                .args(rack::qemu_args(spec, &paths)),
            &dir,
        )?;
        let qemu = Owned::new(format!("QEMU {}", spec.name), qemu);
        let bmc = match spec.bmc.kind {
            BmcKind::Redfish => self.start_redfish_bmc(rack_file, spec, &dir, password)?,
            BmcKind::Ipmi => self.start_ipmi_bmc(spec, &dir, password.1)?,
        };
        let mut vm = RackVm {
            spec: spec.clone(),
            dir,
            started,
            bmc,
            qemu,
        };
        // Ready when the Redfish BMC says it serves (it waits for QEMU's QMP socket
        // first); ipmi_sim gives no such sign: it must at least still run.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::read_to_string(vm.dir.join("bmc.log")).unwrap_or_default();
            let ready = match spec.bmc.kind {
                BmcKind::Redfish => log.contains("serving"),
                BmcKind::Ipmi => vm.started.elapsed() > Duration::from_millis(500),
            };
            if !vm.bmc.running() || !vm.qemu.running() || Instant::now() > deadline {
                return Err(LabError::Exited {
                    what: format!("the virtual BMC or QEMU of {}", spec.name),
                    status: log.trim().to_owned(),
                    logs: vm.dir.display().to_string(),
                });
            }
            if ready {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.rack_vms.push(vm);
        Ok(self.rack_vms.last_mut().expect("just pushed"))
    }

    /// `lab-vbmc` (Redfish, in front of the VM's `bmc.qmp`) on the lab bridge.
    fn start_redfish_bmc(
        &self,
        rack_file: &Path,
        spec: &VmSpec,
        dir: &Path,
        password: (&str, &str),
    ) -> Result<Owned, LabError> {
        let vbmc = sibling_binary(
            "lab-vbmc",
            "run `cargo build -p hardware-tests` (or `cargo test --workspace`)",
        )?;
        let log = std::fs::File::create(dir.join("bmc.log")).map_err(io("bmc.log"))?;
        let child = self
            .netns()
            .command(&vbmc.to_string_lossy())
            .arg("--rack")
            .arg(rack_file)
            .args(["--vm", &spec.name, "--qmp"])
            .arg(dir.join("bmc.qmp"))
            .args(["--listen", &format!("{BMC_ADDRESS}:{}", spec.bmc.port)])
            .args(["--password-env", password.0])
            .env(password.0, password.1)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("bmc.log"))?)
            .stderr(log)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: vbmc.display().to_string(),
                source,
            })?;
        Ok(Owned::new(format!("virtual BMC of {}", spec.name), child))
    }

    /// OpenIPMI's `ipmi_sim` on the lab bridge with `ipmi-qemu-hook` (power, reset,
    /// PXE boot through the VM's `bmc.qmp`) as its chassis control; user `admin`.
    fn start_ipmi_bmc(&self, spec: &VmSpec, dir: &Path, password: &str) -> Result<Owned, LabError> {
        let hook = sibling_binary(
            "ipmi-qemu-hook",
            "run `cargo build -p hardware-tests` (or `cargo test --workspace`)",
        )?;
        let mut devices = String::new();
        for (i, _) in spec.nics.iter().enumerate().filter(|(_, n)| n.boot) {
            devices.push_str(&format!(
                " --nic {}:{}",
                rack::nic_id(i),
                rack::NIC_BOOTINDEX
            ));
        }
        if let Some(i) = spec
            .disks
            .iter()
            .position(|d| matches!(d.kind, rack::DiskKind::Virtio | rack::DiskKind::Sata))
        {
            devices.push_str(&format!(
                " --disk {}:{}",
                rack::disk_id(i),
                rack::DISK_BOOTINDEX
            ));
        }
        let auths = "none md2 md5 straight";
        let lan = format!(
            "name \"{name}\"\nset_working_mc 0x20\n  startlan 1\n    addr {BMC_ADDRESS} {port}\n    \
             priv_limit admin\n    allowed_auths_callback {auths}\n    allowed_auths_user {auths}\n    \
             allowed_auths_operator {auths}\n    allowed_auths_admin {auths}\n    guid {guid}\n  \
             endlan\n  chassis_control \"{hook} --qmp {qmp}{devices} 0x20\"\n  \
             user 2 true \"admin\" \"{password}\" admin 10 {auths}\n",
            name = spec.name,
            port = spec.bmc.port,
            guid = spec.uuid().replace('-', ""),
            hook = hook.display(),
            qmp = dir.join("bmc.qmp").display(),
        );
        std::fs::write(dir.join("lan.conf"), lan).map_err(io("writing lan.conf"))?;
        std::fs::write(
            dir.join("lab.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
        )
        .map_err(io("writing lab.emu"))?;
        std::fs::create_dir_all(dir.join("sim-state")).map_err(io("creating sim-state"))?;
        let log = std::fs::File::create(dir.join("bmc.log")).map_err(io("bmc.log"))?;
        let child = self
            .netns()
            .command("ipmi_sim")
            .current_dir(dir)
            .args(["-n", "-c", "lan.conf", "-f", "lab.emu", "-s", "sim-state"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("bmc.log"))?)
            .stderr(log)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: "ipmi_sim (Debian openipmi)".into(),
                source,
            })?;
        Ok(Owned::new(format!("ipmi_sim of {}", spec.name), child))
    }

    /// A rack VM started earlier, by name.
    pub fn rack_vm(&mut self, name: &str) -> Option<&mut RackVm> {
        self.rack_vms.iter_mut().find(|vm| vm.spec.name == name)
    }

    /// Waits until node `name` is `available`, reading the lab provisioner's
    /// store, and checks that `match profile` stored its outcome (a plan or a
    /// plan error) with it; fails at once when the node fails.
    pub fn wait_matched(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<provisioner::store::NodeRecord, LabError> {
        let node = self.wait_state(name, provisioner::lifecycle::State::Available, timeout)?;
        // `match profile` commits with the transition: its outcome is there.
        if node.plan.is_none() && node.plan_error.is_none() {
            return Err(LabError::Missing(format!(
                "node {name} is available without a plan or plan error; logs: {}",
                self.dir().display()
            )));
        }
        Ok(node)
    }

    /// Waits until node `name` is in state `want`, reading the lab
    /// provisioner's store; fails at once when the node fails (unless `want`
    /// is `failed`).
    pub fn wait_state(
        &self,
        name: &str,
        want: provisioner::lifecycle::State,
        timeout: Duration,
    ) -> Result<provisioner::store::NodeRecord, LabError> {
        use provisioner::lifecycle::State;
        let store_error = |e: provisioner::store::StoreError| {
            LabError::Missing(format!("reading node {name} from the lab's store: {e}"))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("a runtime for the store"))?;
        let store = runtime
            .block_on(provisioner::store::Store::open(&self.dir().join("state")))
            .map_err(store_error)?;
        let started = Instant::now();
        let result = loop {
            let node = match runtime.block_on(store.node(name)) {
                Ok(node) => node,
                Err(e) => break Err(store_error(e)),
            };
            if node.state == want {
                break Ok(node);
            }
            if node.state == State::Failed {
                break Err(LabError::Missing(format!(
                    "node {name} failed: {}; logs: {}",
                    node.last_error.as_deref().unwrap_or("no reason recorded"),
                    self.dir().display()
                )));
            }
            if started.elapsed() > timeout {
                break Err(LabError::Timeout {
                    what: format!("node {name} to be {want} (it is {})", node.state),
                    waited: timeout,
                    logs: self.dir().display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        runtime.block_on(store.close());
        result
    }
}
