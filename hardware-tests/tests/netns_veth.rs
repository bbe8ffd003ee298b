//! [`VethPair`] and [`Netns`] build what they promise and remove it on every
//! exit path: two namespaces joined by a veth pair with its addresses, links
//! up and commands run inside; a normal drop and a panic both delete the
//! namespaces and the pair; a namespace name already taken is refused and
//! left alone. Needs root.

use std::process::Command;

use anyhow::{Result, ensure};
use hardware_tests::lab::{Netns, VethPair};

fn run(command: &mut Command) -> Result<String> {
    let out = command.output()?;
    ensure!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn namespaces() -> Result<Vec<String>> {
    Ok(run(Command::new("ip").args(["netns", "list"]))?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Links of the host's namespace, one line each.
fn host_links() -> Result<String> {
    run(Command::new("ip").args(["-o", "link", "show"]))
}

#[test]
fn veth_pair_is_built_inside_its_namespaces_and_goes_on_drop() -> Result<()> {
    let pid = std::process::id();
    let pair = VethPair::create("vt", "d", "10.78.0.1/24", Some("10.78.0.2/24"))?;
    let (server, client) = (pair.server.name().to_owned(), pair.client.name().to_owned());
    assert_eq!(server, format!("vt{pid}ds"));
    assert_eq!(client, format!("vt{pid}dc"));
    assert_eq!(pair.server_if, format!("vt{pid}da"));
    assert_eq!(pair.client_if, format!("vt{pid}db"));
    let listed = namespaces()?;
    assert!(
        listed.contains(&server) && listed.contains(&client),
        "{listed:?}"
    );
    // Never in the host's namespace, not even for a moment it would outlive.
    let host = host_links()?;
    assert!(!host.contains(&pair.server_if), "{host}");
    assert!(!host.contains(&pair.client_if), "{host}");

    // Each end in its own namespace, up, with its address; loopback up too.
    let server_addr = run(pair.in_server("ip").args(["-o", "addr", "show"]))?;
    assert!(server_addr.contains(&pair.server_if), "{server_addr}");
    assert!(server_addr.contains("10.78.0.1/24"), "{server_addr}");
    assert!(server_addr.contains("127.0.0.1/8"), "{server_addr}");
    assert!(!server_addr.contains(&pair.client_if), "{server_addr}");
    let client_addr = run(pair.in_client("ip").args(["-o", "addr", "show"]))?;
    assert!(client_addr.contains(&pair.client_if), "{client_addr}");
    assert!(client_addr.contains("10.78.0.2/24"), "{client_addr}");
    assert!(!client_addr.contains(&pair.server_if), "{client_addr}");
    for (ns, dev) in [
        (&pair.server, &pair.server_if),
        (&pair.client, &pair.client_if),
    ] {
        let link = run(ns.command("ip").args(["-o", "link", "show", "dev", dev]))?;
        assert!(link.contains(",UP"), "{dev} not up: {link}");
    }

    pair.set_client_mac("52:54:00:78:00:01")?;
    let link = run(pair
        .in_client("ip")
        .args(["-o", "link", "show", "dev", &pair.client_if]))?;
    assert!(link.contains("52:54:00:78:00:01"), "{link}");

    drop(pair);
    let listed = namespaces()?;
    assert!(
        !listed.contains(&server) && !listed.contains(&client),
        "left behind: {listed:?}"
    );
    let host = host_links()?;
    assert!(!host.contains(&format!("vt{pid}d")), "{host}");

    // Without a client address, the client end has none (udhcpc sets it).
    let pair = VethPair::create("vt", "n", "10.78.1.1/24", None)?;
    let client_addr = run(pair.in_client("ip").args(["-o", "-4", "addr", "show"]))?;
    assert!(!client_addr.contains(&pair.client_if), "{client_addr}");
    Ok(())
}

#[test]
fn veth_pair_goes_on_panic() -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let pair = VethPair::create("vt", "p", "10.78.2.1/24", None).expect("veth pair");
        tx.send((pair.server.name().to_owned(), pair.client.name().to_owned()))
            .expect("send");
        panic!("a netns test failing on purpose");
    })
    .join();
    assert!(outcome.is_err());
    let (server, client) = rx.recv()?;
    let listed = namespaces()?;
    assert!(
        !listed.contains(&server) && !listed.contains(&client),
        "left behind after a panic: {listed:?}"
    );
    Ok(())
}

#[test]
fn a_taken_name_is_refused_and_left_alone() -> Result<()> {
    let name = format!("vt{}t", std::process::id());
    let first = Netns::create_named(name.clone())?;
    let err = Netns::create_named(name.clone()).expect_err("a second namespace of that name");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(namespaces()?.contains(&name), "the refusal removed {name}");
    first.ip(&["link", "show", "lo"])?;
    drop(first);
    assert!(!namespaces()?.contains(&name));

    // A pair whose client namespace is taken: refused, the taken one stays,
    // the server namespace it had created goes.
    let pid = std::process::id();
    let taken = Netns::create_named(format!("vt{pid}xc"))?;
    let err = VethPair::create("vt", "x", "10.78.3.1/24", None).expect_err("client name taken");
    assert!(err.to_string().contains("already exists"), "{err}");
    let listed = namespaces()?;
    assert!(listed.contains(&taken.name().to_owned()), "{listed:?}");
    assert!(!listed.contains(&format!("vt{pid}xs")), "{listed:?}");

    // Interface names longer than Linux allows are refused before anything exists.
    let err =
        VethPair::create("vt", "tag-far-too-long", "10.78.4.1/24", None).expect_err("too long");
    assert!(err.to_string().contains("longer than 15"), "{err}");
    assert!(!namespaces()?.iter().any(|n| n.contains("far-too-long")));
    Ok(())
}
