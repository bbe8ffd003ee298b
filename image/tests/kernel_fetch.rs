//! Fetching Debian's kernel for real with apt-get (network and apt lists needed; the
//! package is cached in the user's cache directory, so only the first run downloads).

use image::kernel;
use image::progress::Quiet;

#[test]
fn fetches_debian_kernel_and_reuses_the_cache() {
    let cache = kernel::default_cache_dir();
    let k = kernel::fetch(&cache, kernel::DEFAULT_METAPACKAGE, &Quiet).unwrap_or_else(|e| {
        panic!("{e}\n(needs apt-get with fresh lists: `apt-get update`; see `cargo xtask deps`)")
    });
    assert!(k.package.starts_with("linux-image-"), "{k:?}");
    assert_eq!(
        k.package.strip_prefix("linux-image-"),
        Some(k.release.as_str()),
        "the package is named after the release"
    );
    // A bzImage carries "HdrS" at offset 0x202 (the x86 boot protocol header).
    let vmlinuz = std::fs::read(&k.vmlinuz).unwrap();
    assert_eq!(&vmlinuz[0x202..0x206], b"HdrS");
    assert!(
        k.modules_dir
            .join("kernel/drivers/net/virtio_net.ko")
            .is_file()
            || k.modules_dir
                .join("kernel/drivers/net/virtio_net.ko.xz")
                .is_file(),
        "{}",
        k.modules_dir.display()
    );
    assert!(k.deb.starts_with(cache.join("kernel")));
    // The second fetch downloads nothing new and unpacks nothing again.
    let modified = std::fs::metadata(&k.deb).unwrap().modified().unwrap();
    let again = kernel::fetch(&cache, kernel::DEFAULT_METAPACKAGE, &Quiet).unwrap();
    assert_eq!(again, k);
    assert_eq!(
        std::fs::metadata(&k.deb).unwrap().modified().unwrap(),
        modified
    );
    // An explicit .deb is unpacked from the cache the same way.
    let from_file = kernel::unpack(&k.deb, &cache, &Quiet).unwrap();
    assert_eq!(from_file, k);
}
