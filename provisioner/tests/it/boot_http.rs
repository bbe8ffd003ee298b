//! HTTP boot against the real daemon: per-machine iPXE scripts chosen by the
//! node's state (with per-boot tokens), boot files confined to their
//! directory, catalog images with Range/ETag, and the script counters.

use std::path::Path;

use crate::common::{Daemon, write_nodes};
use model::net::Mac;
use provisioner::progress::Step;
use provisioner::store::Store;
use reqwest::StatusCode;
use reqwest::blocking::Client;

const KNOWN: &str = "52:54:00:00:00:01";
const UNKNOWN: &str = "52:54:00:77:00:09";

fn write_boot_site(dir: &Path) -> Vec<u8> {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::create_dir_all(dir.join("ramdisk")).unwrap();
    std::fs::create_dir_all(dir.join("bootfiles")).unwrap();
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("ramdisk/vmlinuz"), &kernel).unwrap();
    std::fs::write(dir.join("ramdisk/initramfs"), b"initramfs bytes").unwrap();
    std::fs::write(dir.join("bootfiles/snponly.efi"), b"EFI iPXE").unwrap();
    std::fs::write(dir.join("secret"), b"not for booting machines").unwrap();
    std::os::unix::fs::symlink(dir.join("secret"), dir.join("bootfiles/link")).unwrap();
    std::fs::write(
        dir.join("site.yaml"),
        "network:\n  interface: lo\n  address: 127.0.0.1/8\n  dhcp:\n    mode: off\n\
         api:\n  listen: 127.0.0.1:0\n\
         images:\n  - name: inspect\n    kernel: ramdisk/vmlinuz\n    initramfs: ramdisk/initramfs\n\
         boot:\n  files: bootfiles\n  inspect_image: inspect\n",
    )
    .unwrap();
    write_nodes(dir, vec!["node-001".into()]);
    kernel
}

fn token_in(script: &str) -> String {
    let start = script
        .find("provisioner.token=")
        .expect("token in the script")
        + 18;
    script[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn mac(text: &str) -> Mac {
    text.parse().unwrap()
}

#[test]
fn scripts_tokens_files_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let kernel = write_boot_site(&site);
    let daemon = Daemon::start(&site, &dir.path().join("state"));
    let http = Client::new();
    let get = |path: &str| http.get(format!("{}{path}", daemon.base)).send().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(Store::open(&daemon.state)).unwrap();

    // A known, enrolled node: the inspection ramdisk, with a fresh token each time.
    let response = get(&format!("/boot/{KNOWN}.ipxe"));
    assert_eq!(response.status(), StatusCode::OK);
    let script = response.text().unwrap();
    let host = daemon.base.trim_start_matches("http://");
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains(&format!("kernel http://{host}/images/inspect/vmlinuz initrd=initramfs console=ttyS0,115200 provisioner.url=http://{host} provisioner.token=")),
        "{script}"
    );
    assert!(
        script.contains(&format!("provisioner.mac={KNOWN} || goto retry")),
        "{script}"
    );
    let first = token_in(&script);
    // The fetch is recorded for the node: a later timeout can say the script arrived.
    let steps = runtime.block_on(store.progress("node-001")).unwrap();
    assert!(
        steps.iter().any(|(step, _)| *step == Step::Script),
        "{steps:?}"
    );
    let session = runtime
        .block_on(store.verify_boot_token(&first))
        .unwrap()
        .unwrap();
    assert_eq!(session.mac, mac(KNOWN));
    assert_eq!(session.node.as_deref(), Some("node-001"));
    let again = get(&format!("/boot/{KNOWN}.ipxe?retry=3")).text().unwrap();
    assert!(again.contains("sleep 40"), "{again}");
    assert!(
        again.contains(&format!("/boot/{KNOWN}.ipxe?retry=4")),
        "{again}"
    );
    let second = token_in(&again);
    assert_ne!(first, second);
    assert!(
        runtime
            .block_on(store.verify_boot_token(&first))
            .unwrap()
            .is_none()
    );

    // Other MAC spellings name the same machine.
    let upper = get("/boot/52-54-00-00-00-01.ipxe").text().unwrap();
    assert!(upper.contains("node-001"), "{upper}");

    // An unknown machine is inspected too (discovery), its token bound to no node.
    let unknown = get(&format!("/boot/{UNKNOWN}.ipxe")).text().unwrap();
    assert!(unknown.contains("unknown machine"), "{unknown}");
    let session = runtime
        .block_on(store.verify_boot_token(&token_in(&unknown)))
        .unwrap()
        .unwrap();
    assert_eq!((session.mac, session.node), (mac(UNKNOWN), None));
    assert_eq!(get("/boot/not-a-mac.ipxe").status(), StatusCode::NOT_FOUND);

    // Maintenance: a script that says why and asks again later, no token.
    let out = daemon.cli(&[
        "node",
        "maintenance",
        "node-001",
        "on",
        "--reason",
        "fan $broken | swap",
    ]);
    assert!(out.status.success(), "{out:?}");
    let wait = get(&format!("/boot/{KNOWN}.ipxe")).text().unwrap();
    assert!(
        wait.contains("in maintenance (fan  broken   swap)"),
        "{wait}"
    );
    assert!(!wait.contains("provisioner.token"), "{wait}");
    assert!(wait.contains("chain --replace --autofree"), "{wait}");

    // Boot files: only regular files inside the directory.
    let efi = get("/boot/snponly.efi");
    assert_eq!(efi.status(), StatusCode::OK);
    assert_eq!(efi.bytes().unwrap().as_ref(), b"EFI iPXE");
    for refused in [
        "/boot/link",
        "/boot/..%2Fsecret",
        "/boot/%2E%2E%2Fsecret",
        "/boot/nope.efi",
    ] {
        let response = get(refused);
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{refused}");
        assert!(
            !response.text().unwrap().contains("not for booting"),
            "{refused}"
        );
    }

    // Images: whole, ranges, conditions, HEAD.
    let url = format!("{}/images/inspect/vmlinuz", daemon.base);
    let whole = http.get(&url).send().unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
    assert_eq!(whole.bytes().unwrap().as_ref(), &kernel[..]);
    let part = http
        .get(&url)
        .header("Range", "bytes=100000-100099")
        .send()
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"],
        "bytes 100000-100099/300000"
    );
    assert_eq!(part.bytes().unwrap().as_ref(), &kernel[100_000..100_100]);
    let tail = http.get(&url).header("Range", "bytes=-10").send().unwrap();
    assert_eq!(tail.bytes().unwrap().as_ref(), &kernel[299_990..]);
    let past = http
        .get(&url)
        .header("Range", "bytes=300000-")
        .send()
        .unwrap();
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.headers()["content-range"], "bytes */300000");
    let cached = http
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    let stale = http
        .get(&url)
        .header("Range", "bytes=0-9")
        .header("If-Range", "\"stale\"")
        .send()
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    let fresh = http
        .get(&url)
        .header("Range", "bytes=0-9")
        .header("If-Range", &etag)
        .send()
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::PARTIAL_CONTENT);
    let head = http.head(&url).send().unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "300000");
    assert!(head.bytes().unwrap().is_empty());
    let initramfs = get("/images/inspect/initramfs");
    assert_eq!(initramfs.bytes().unwrap().as_ref(), b"initramfs bytes");
    assert_eq!(
        get("/images/inspect/secret").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(get("/images/nope/vmlinuz").status(), StatusCode::NOT_FOUND);

    // Every script served is counted per MAC.
    let metrics = get("/metrics").text().unwrap();
    for line in [
        format!("provisioner_boot_scripts_total{{mac=\"{KNOWN}\",script=\"inspect\"}} 3"),
        format!("provisioner_boot_scripts_total{{mac=\"{KNOWN}\",script=\"wait\"}} 1"),
        format!("provisioner_boot_scripts_total{{mac=\"{UNKNOWN}\",script=\"inspect\"}} 1"),
    ] {
        assert!(metrics.contains(&line), "{line} missing in:\n{metrics}");
    }
    runtime.block_on(store.close());
}

#[test]
fn a_template_broken_after_start_gives_a_wait_script_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    write_boot_site(&site);
    std::fs::create_dir_all(site.join("templates")).unwrap();
    let template = site.join("templates/inspect.ipxe.tera");
    std::fs::write(&template, "#!ipxe\necho {{ undefined_variable }}\n").unwrap();
    // `site validate` (and so `serve`) refuses it with its position...
    let refused = provisioner::site::load(&site).unwrap_err().to_string();
    assert!(
        refused.contains("templates/inspect.ipxe.tera:1:1: iPXE template does not render"),
        "{refused}"
    );
    // ...but templates are read at each render: one broken while the daemon runs
    // gives machines a script that says so and retries, never a dead shell.
    std::fs::remove_file(&template).unwrap();
    let daemon = Daemon::start(&site, &dir.path().join("state"));
    std::fs::write(&template, "#!ipxe\necho {{ undefined_variable }}\n").unwrap();
    let script = reqwest::blocking::get(format!("{}/boot/{KNOWN}.ipxe", daemon.base))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        script.contains("the site's iPXE template is broken"),
        "{script}"
    );
    assert!(script.contains("inspect.ipxe.tera"), "{script}");
    assert!(script.contains("chain --replace --autofree"), "{script}");
}
