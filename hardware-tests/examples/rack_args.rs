//! Prints the QEMU command line of one lab rack VM (for trying it by hand):
//! `cargo run -p hardware-tests --example rack_args -- lab-compute-0 DIR`.
use hardware_tests::rack::{self, Firmware, VmPaths};

fn main() {
    let mut args = std::env::args().skip(1);
    let (name, dir) = (
        args.next().expect("VM name"),
        args.next().expect("work dir"),
    );
    let dir = std::path::PathBuf::from(dir);
    let rack = rack::load(&rack::lab_rack_file()).unwrap_or_else(|e| panic!("{e}"));
    let vm = rack
        .vms
        .iter()
        .find(|v| v.name == name)
        .expect("no such VM");
    let paths = VmPaths {
        taps: (0..vm.nics.len()).map(|i| format!("rk{i}")).collect(),
        disks: (0..vm.disks.len())
            .map(|i| dir.join(format!("d{i}.raw")))
            .collect(),
        serial_log: dir.join("serial.log"),
        qmp: vec![dir.join("test.qmp")],
        ovmf: (vm.firmware == Firmware::Uefi).then(|| {
            (
                "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
                dir.join("VARS.fd"),
            )
        }),
        accel: "tcg".into(),
    };
    for a in rack::qemu_args(vm, &paths) {
        println!("{a}");
    }
}
