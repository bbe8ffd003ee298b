//! The Redfish driver's TLS policy against `openssl s_server` with a certificate for
//! 127.0.0.1 from a throwaway site CA (Debian `openssl`, from `cargo xtask deps`). The server
//! answers HTML, not Redfish: a `Protocol` error therefore means the TLS handshake was
//! accepted, a `Tls` error that it was refused.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use provisioner::bmc::redfish::RedfishBmc;
use provisioner::bmc::{BmcConfig, BmcError, TlsPolicy};

/// `openssl s_server`, killed (by PID) when dropped.
struct TlsServer {
    child: Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running openssl (install Debian openssl: `cargo xtask deps`)")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA `dir/NAME-ca.{crt,key}` and, when `leaf`, a server certificate for 127.0.0.1
/// signed by it, `dir/NAME.{crt,key}` (webpki refuses a CA certificate as a server's).
fn pki(dir: &Path, name: &str, leaf: bool) -> Result<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_key = format!("{name}-ca.key");
    let ca_crt = format!("{name}-ca.crt");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-days",
        "2",
        "-subj",
        "/CN=site CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca_crt,
    ]);
    openssl(dir, &args)?;
    if !leaf {
        return Ok(());
    }
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-subj", "/CN=bmc", "-keyout", &key, "-out", &csr]);
    openssl(dir, &args)?;
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            &crt,
        ],
    )
}

fn start(dir: &Path) -> Result<TlsServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("openssl")
        .current_dir(dir)
        .args([
            "s_server", "-quiet", "-www", "-cert", "bmc.crt", "-key", "bmc.key",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting openssl s_server")?;
    let server = TlsServer { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("openssl s_server did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

async fn connect(port: u16, tls: TlsPolicy) -> BmcError {
    let mut config = BmcConfig::new(format!("redfish://127.0.0.1:{port}").parse().unwrap(), None);
    config.tls = tls;
    config.timeout = Duration::from_secs(5);
    config.backoff = Duration::from_millis(10);
    match RedfishBmc::connect(config).await {
        Ok(_) => panic!("an HTML page passed for a Redfish service"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn certificates_are_verified_unless_insecure_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path(), "bmc", true).unwrap();
    pki(dir.path(), "other", false).unwrap();
    let server = start(dir.path()).unwrap();

    // Default: the web PKI, which does not know a self-signed certificate.
    let err = connect(server.port, TlsPolicy::WebPki).await;
    assert!(matches!(err, BmcError::Tls { .. }), "web PKI: {err}");
    assert!(err.to_string().contains("--ca-file"), "{err}");

    // The site CA: accepted (then the HTML page is refused as Redfish).
    let err = connect(
        server.port,
        TlsPolicy::CaFile(dir.path().join("bmc-ca.crt")),
    )
    .await;
    assert!(matches!(err, BmcError::Protocol { .. }), "own CA: {err}");

    // Another CA: refused.
    let err = connect(
        server.port,
        TlsPolicy::CaFile(dir.path().join("other-ca.crt")),
    )
    .await;
    assert!(matches!(err, BmcError::Tls { .. }), "other CA: {err}");

    // Insecure, asked for by name: accepted.
    let err = connect(server.port, TlsPolicy::Insecure).await;
    assert!(matches!(err, BmcError::Protocol { .. }), "insecure: {err}");

    // A CA file that is not PEM.
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let err = connect(server.port, TlsPolicy::CaFile(dir.path().join("junk.pem"))).await;
    assert!(matches!(err, BmcError::Tls { .. }), "junk CA file: {err}");
    drop(server);
}
