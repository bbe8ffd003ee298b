//! Runs the lab's accelerator probe guest by hand, without the cache:
//! `cargo run -p hardware-tests --example accel_probe -- kvm|tcg [SECONDS [QEMU]]`.
//! Prints what the guest did and the verdict it would give, e.g. to time the
//! probe under TCG against KVM on a new kind of host. With `host` instead,
//! prints the lab's own decision on this host (`LAB_ACCEL`, cache, probe).
use std::path::Path;
use std::time::{Duration, Instant};

use hardware_tests::lab::accel::{self, Accel, PROBE_LIMIT, probe_guest};

fn main() {
    let mut args = std::env::args().skip(1);
    let accel = match args.next().as_deref() {
        Some("kvm") => Accel::Kvm,
        Some("tcg") => Accel::Tcg,
        Some("host") => {
            // `decision` prints its line on stderr itself.
            let started = Instant::now();
            accel::decision();
            println!("decided in {:.1} s", started.elapsed().as_secs_f64());
            return;
        }
        _ => {
            eprintln!("usage: accel_probe host | accel_probe kvm|tcg [SECONDS [QEMU]]");
            std::process::exit(2);
        }
    };
    let limit = args
        .next()
        .and_then(|s| s.parse().ok())
        .map_or(PROBE_LIMIT, Duration::from_secs_f64);
    // Another QEMU program (e.g. a wrapper that changes the CPU model) to try a variant.
    let qemu = args.next().unwrap_or_else(|| "qemu-system-x86_64".into());
    let started = Instant::now();
    let outcome = probe_guest(Path::new(&qemu), accel.qemu_arg(), limit);
    println!(
        "-accel {}: {outcome:?} after {:.1} s",
        accel.qemu_arg(),
        started.elapsed().as_secs_f64()
    );
    println!("verdict if this were KVM: {:?}", outcome.verdict());
}
