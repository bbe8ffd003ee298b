//! The kernel command line of the inspection ramdisk (`/proc/cmdline`), as
//! the provisioner's iPXE script writes it:
//! `console=ttyS0,115200 provisioner.url=http://ADDR:PORT provisioner.token=TOKEN provisioner.mac=MAC`.
//! Pure: text in, parameters out.

use model::net::Mac;

/// What the agent needs from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// Base URL of the provisioner (`http://ADDR:PORT`, no trailing `/`).
    pub url: String,
    /// The per-boot token, sent as `Authorization: Bearer TOKEN`.
    pub token: String,
    /// The MAC the machine booted from (displayed in lowercase colon form).
    pub mac: Mac,
}

/// Why the command line is not usable; the message says what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error(
        "`provisioner.{0}=` is missing from the kernel command line: the provisioner's iPXE \
         script sets it; check that the node booted the provisioner's script, not a stale one"
    )]
    Missing(&'static str),
    #[error("`provisioner.url={0}` is not an http:// URL: check the provisioner's api.listen")]
    BadUrl(String),
    #[error("`provisioner.mac={0}` is not a MAC address (write 52:54:00:aa:00:01)")]
    BadMac(String),
}

/// Reads the `provisioner.*` parameters. Unknown words are ignored; a word
/// given twice keeps its last value, as the kernel does.
pub fn parse(cmdline: &str) -> Result<BootParams, CmdlineError> {
    let (mut url, mut token, mut mac) = (None, None, None);
    for word in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "provisioner.url" => url = Some(value),
            "provisioner.token" => token = Some(value),
            "provisioner.mac" => mac = Some(value),
            _ => {}
        }
    }
    let url = url.ok_or(CmdlineError::Missing("url"))?;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| CmdlineError::BadUrl(url.to_owned()))?;
    if rest.trim_end_matches('/').is_empty() {
        return Err(CmdlineError::BadUrl(url.to_owned()));
    }
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or(CmdlineError::Missing("token"))?;
    let mac_text = mac.ok_or(CmdlineError::Missing("mac"))?;
    let mac: Mac = mac_text
        .parse()
        .map_err(|_| CmdlineError::BadMac(mac_text.to_owned()))?;
    Ok(BootParams {
        url: url.trim_end_matches('/').to_owned(),
        token: token.to_owned(),
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parameters_the_ipxe_script_writes() {
        let line = "console=ttyS0,115200 provisioner.url=http://10.213.0.1:8080/ \
                    provisioner.token=abc123 provisioner.mac=52:54:00:AA:00:01 initrd=initramfs\n";
        let params = parse(line).unwrap();
        assert_eq!(params.url, "http://10.213.0.1:8080");
        assert_eq!(params.token, "abc123");
        assert_eq!(params.mac.to_string(), "52:54:00:aa:00:01");
        assert_eq!(params.mac, Mac([0x52, 0x54, 0, 0xaa, 0, 1]));
    }

    #[test]
    fn every_problem_names_the_parameter() {
        let ok = "provisioner.url=http://h:1 provisioner.token=t provisioner.mac=52:54:00:aa:00:01";
        let cases = [
            (
                "provisioner.token=t provisioner.mac=52:54:00:aa:00:01",
                CmdlineError::Missing("url"),
            ),
            (
                "provisioner.url=http://h:1 provisioner.mac=52:54:00:aa:00:01",
                CmdlineError::Missing("token"),
            ),
            (
                "provisioner.url=http://h:1 provisioner.token= provisioner.mac=52:54:00:aa:00:01",
                CmdlineError::Missing("token"),
            ),
            (
                "provisioner.url=http://h:1 provisioner.token=t",
                CmdlineError::Missing("mac"),
            ),
            (
                "provisioner.url=https://h:1 provisioner.token=t provisioner.mac=52:54:00:aa:00:01",
                CmdlineError::BadUrl("https://h:1".into()),
            ),
            (
                "provisioner.url=http:// provisioner.token=t provisioner.mac=52:54:00:aa:00:01",
                CmdlineError::BadUrl("http://".into()),
            ),
            (
                "provisioner.url=http://h:1 provisioner.token=t provisioner.mac=52:54:00:aa:00",
                CmdlineError::BadMac("52:54:00:aa:00".into()),
            ),
            (
                "provisioner.url=http://h:1 provisioner.token=t provisioner.mac=52:54:00:aa:00:zz",
                CmdlineError::BadMac("52:54:00:aa:00:zz".into()),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line).unwrap_err(), expected, "{line}");
        }
        // The last of a repeated word wins, as in the kernel.
        let params = parse(&format!("{ok} provisioner.token=newer")).unwrap();
        assert_eq!(params.token, "newer");
    }
}
