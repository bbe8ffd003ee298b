//! `cargo xtask`: everything a developer or CI runs, in Rust so it works the same everywhere.
//!
//! Subcommands: `deps` (Debian packages the tests need), `test` (exactly what CI runs) and
//! `bench <name>` (performance figures against peers). xtask never edits the workspace's
//! sources; it only builds, runs and measures them.

mod bench;
mod demo;
mod deps;
mod host_image;
mod layers;
mod ramdisk;
mod record_sysfs;
mod sys;
mod test;
mod venv;
mod workspace;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer and CI tasks for this workspace.",
    long_about = "Developer and CI tasks for this workspace.\n\n\
        Start with `cargo xtask deps` (installs the Debian packages the tests need), then \
        `cargo xtask test` (the exact checks CI runs). `cargo xtask bench api` measures the \
        provisioner daemon's API against a static file server; `cargo xtask bench bmc` the \
        Redfish driver against 200 fake BMCs. `cargo xtask ramdisk` builds the inspection \
        ramdisk with a static node-agent."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A virtual rack brought up end to end: build, lab, zero-touch inspection, summary.
    #[command(
        long_about = "A virtual rack brought up end to end, on the embedded lab site.\n\n\
        Installs what is missing (like `cargo xtask test`), builds the provisioner, the lab's \
        virtual BMC and the inspection ramdisk, then creates a network namespace with the lab \
        bridge, starts the VMs of hardware-tests/sites/lab/rack.yaml powered off behind their \
        virtual BMCs (Redfish and IPMI) and `provisioner serve` on a copy of the lab site. The \
        provisioner then inspects every node by itself; a live table shows each node's state \
        and last event, then a summary per node (profile, CPUs, hugepages, VFs, root disk). \
        Exits 0 when every node is available, non-zero otherwise with the path of the logs. \
        Ctrl-C tears everything down. Needs root (network namespaces).\n\n\
        The VMs run under KVM only when a probe guest boots under it through SeaBIOS and \
        iPXE (verdict cached in ~/.cache/provisioner/accel.json), else under TCG; \
        LAB_ACCEL=tcg|kvm forces one.\n\n\
        --vms N brings up N VMs instead of the rack's three: the rack's VMs taken in turn, the \
        copies renamed and re-addressed (rack.yaml and nodes.yaml written to <target>/demo/ and \
        copied into the lab's site). Memory: the guests' RAM plus about 0.25 GiB per VM, \
        7.5 GiB for three VMs, 15 GiB for six; more than the host's MemAvailable is refused.\n\n\
        Example: cargo xtask demo --vms 6"
    )]
    Demo(demo::Args),
    /// Make sure the Debian packages the tests need are installed (installs them when root).
    #[command(
        long_about = "Make sure the Debian packages the tests need are installed.\n\n\
        The list lives in xtask/src/deps.rs, with the reason each package is needed. \
        When a package is missing and you are root, it is installed with apt-get (enabling \
        bookworm-backports first when a package comes from there). When you are not root, \
        the exact commands to run are printed and the command fails."
    )]
    Deps(deps::Args),
    /// Run exactly what CI runs: deps, rustfmt check, clippy and the test suite.
    #[command(
        long_about = "Run exactly what CI runs, in order, stopping at the first failure:\n\n\
        1. cargo xtask deps\n\
        2. the PyPI peers (sushy-tools) into <target>/venv\n\
        3. cargo fmt --all -- --check\n\
        4. cargo xtask layers (no import cycles, a pure provisioner-core, no fakes in provisioner)\n\
        5. cargo clippy --workspace --all-targets --locked --features <slow tier> -- -D warnings\n\
        6. the static node-agent for the ramdisk tests (see `cargo xtask ramdisk`)\n\
        7. cargo test --workspace --locked --features <slow tier> [EXTRA ARGS]\n\n\
        The slow tier (each crate's `slow-tests` feature) holds the tests that need root, \
        QEMU, Python or Debian peer tools; a plain `cargo test --workspace` runs the fast \
        tier only, as any user.\n\n\
        Output is streamed; each step's duration is printed, then a summary line. \
        The target directory is the caller's (CARGO_TARGET_DIR is respected).\n\n\
        Example: cargo xtask test --no-deps -- --nocapture"
    )]
    Test(test::Args),
    /// Check the layering: no import cycle between a crate's top-level modules, a pure core,
    /// no test doubles in the provisioner's build.
    #[command(
        long_about = "Check the layering rules that the compiler does not.\n\n\
        1. No import cycle between the top-level modules of any workspace crate (a module \
        imports another when its non-test code names `crate::other`).\n\
        2. provisioner-core's normal dependencies contain no tokio, sqlx, axum, hyper, \
        reqwest or tower (`cargo tree -p provisioner-core -e normal`).\n\
        3. `cargo build -p provisioner` leaves its `testing` feature (the fake BMCs) off \
        (`cargo tree -p provisioner -e normal,features -i provisioner`).\n\n\
        Prints each cycle with the file:line of every edge in it. `cargo xtask test` runs it."
    )]
    Layers,
    /// Benchmark a component against a peer (e.g. `cargo xtask bench api`).
    Bench(bench::Args),
    /// Record the sysfs/procfs trees of the inspection test fixtures in QEMU VMs.
    #[command(
        long_about = "Record the sysfs/procfs trees of the inspection test fixtures.\n\n\
        For each agent/tests/fixtures/NAME/vm.json (all when no NAME is given), boots a QEMU \
        VM (TCG) with that topology on Debian's kernel and a small initramfs holding a static \
        node-agent, runs `node-agent inspect --record` in it, and replaces \
        agent/tests/fixtures/NAME/tree/ with the files the inspection read. No network is \
        used. Takes about a minute per VM on 2 cores; needs `cargo xtask deps` first.\n\n\
        Example: cargo xtask record-sysfs numa2-igb-uefi"
    )]
    RecordSysfs(record_sysfs::Args),
    /// Build a static node-agent and the inspection ramdisk with it (kernel + initramfs).
    #[command(
        long_about = "Build a static node-agent and the inspection ramdisk with it.\n\n\
        1. cargo build --release -p agent --target x86_64-unknown-linux-gnu, with \
        RUSTFLAGS=\"-C target-feature=+crt-static\" (no extra toolchain needed)\n\
        2. cargo build -p provisioner\n\
        3. provisioner image build ramdisk --agent <that agent> --out <target>/ramdisk\n\n\
        The first run downloads Debian's kernel package with apt-get (cached in \
        ~/.cache/provisioner). Boot the result with qemu-system-x86_64 -kernel/-initrd."
    )]
    Ramdisk(ramdisk::Args),
    /// Build a static node-agent and the A/B host disk image with it.
    #[command(
        long_about = "Build a static node-agent and the immutable A/B host image with it.\n\n\
        1. the static node-agent and the provisioner, as `cargo xtask ramdisk` does\n\
        2. provisioner image build host --keep-raw --agent <that agent> --out <target>/host-image\n\n\
        Outputs host.raw (and .zst), root.img, uki.efi and manifest.json. The first run \
        downloads Debian's kernel, busybox-static and systemd-boot-efi with apt-get (cached \
        in ~/.cache/provisioner). Needs mkfs.erofs, objcopy and mkfs.ext4 (`cargo xtask deps`)."
    )]
    HostImage(host_image::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Deps(args) => deps::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Layers => layers::check(),
        Command::Bench(args) => bench::run(args),
        Command::RecordSysfs(args) => record_sysfs::run(&args),
        Command::Ramdisk(args) => ramdisk::run(&args),
        Command::HostImage(args) => host_image::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes, without a backtrace: these errors are for humans.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
