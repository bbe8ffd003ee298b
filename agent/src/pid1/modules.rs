//! `/lib/modules/load-order` of the inspection ramdisk: one module path per
//! line, relative to `/lib/modules/<version>/`, dependencies before
//! dependents (written by `provisioner image build ramdisk`). Pure parsing
//! here; loading (`finit_module`) is in [`super::load_modules`].

/// The module paths to load, in order: blank lines and `#` comments are
/// skipped; a path that would leave the modules directory (absolute, `..`)
/// is returned in the second list, to be reported and not loaded.
pub fn parse_load_order(text: &str) -> (Vec<String>, Vec<String>) {
    let mut load = Vec::new();
    let mut refused = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('/') || line.split('/').any(|part| part == "..") {
            refused.push(line.to_owned());
        } else {
            load.push(line.to_owned());
        }
    }
    (load, refused)
}

/// The module name of a path (`kernel/drivers/net/virtio_net.ko` ->
/// `virtio_net`), for messages.
pub fn module_name(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split('.').next().unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_skips_comments_and_refuses_escapes() {
        let text = "# virtio first\nkernel/drivers/virtio/virtio.ko\n\n  kernel/drivers/net/virtio_net.ko  \n/etc/evil.ko\nkernel/../../x.ko\n";
        let (load, refused) = parse_load_order(text);
        assert_eq!(
            load,
            [
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/net/virtio_net.ko"
            ]
        );
        assert_eq!(refused, ["/etc/evil.ko", "kernel/../../x.ko"]);
        assert_eq!(module_name(&load[1]), "virtio_net");
        assert_eq!(module_name("igb.ko.xz"), "igb");
    }
}
