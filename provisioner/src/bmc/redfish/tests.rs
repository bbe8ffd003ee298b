//! The driver against [`FakeRedfish`]: behaviour, vendor quirks and faults. Every fault
//! ends in a typed error that names the BMC, within the configured timeout.

use std::time::{Duration, Instant};

use super::*;
use crate::bmc::fake_redfish::{FakeRedfish, FakeRedfishOptions, Fault};
use crate::bmc::{BmcConfig, Credentials};

fn config(url: &str, password: &str) -> BmcConfig {
    let mut config = BmcConfig::new(
        url.parse().unwrap(),
        Some(Credentials {
            username: "admin".into(),
            password: Secret::new(password),
        }),
    );
    config.timeout = Duration::from_millis(400);
    config.backoff = Duration::from_millis(10);
    config
}

async fn fake(options: FakeRedfishOptions) -> (FakeRedfish, RedfishBmc) {
    let fake = FakeRedfish::start(options).await.unwrap();
    let bmc = RedfishBmc::connect(config(&fake.url(), "password"))
        .await
        .unwrap();
    (fake, bmc)
}

const PXE_ONCE: BootOverride = BootOverride {
    device: BootDevice::Pxe,
    persistent: false,
    mode: BootMode::Uefi,
};

#[tokio::test]
async fn power_boot_and_inventory_follow_links_in_a_session() {
    let (fake, bmc) = fake(FakeRedfishOptions::default()).await;
    assert!(bmc.uses_session());
    assert_eq!(fake.open_sessions(), 1);
    assert_eq!(bmc.system(), "/redfish/v1/Systems/1");
    bmc.check().await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    bmc.set_boot(PXE_ONCE).await.unwrap();
    assert_eq!(fake.boot(1), ("Pxe".into(), "Once".into(), "UEFI".into()));
    bmc.set_boot(BootOverride {
        device: BootDevice::Disk,
        persistent: true,
        mode: BootMode::Legacy,
    })
    .await
    .unwrap();
    assert_eq!(
        fake.boot(1),
        ("Hdd".into(), "Continuous".into(), "Legacy".into())
    );

    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    // Already on: nothing is sent.
    bmc.power(PowerAction::On).await.unwrap();
    bmc.power(PowerAction::Reset).await.unwrap();
    bmc.power(PowerAction::Cycle).await.unwrap();
    bmc.power(PowerAction::GracefulOff).await.unwrap();
    bmc.power(PowerAction::On).await.unwrap();
    bmc.power(PowerAction::ForceOff).await.unwrap();
    assert_eq!(
        fake.resets(),
        [
            "On",
            "ForceRestart",
            "PowerCycle",
            "GracefulShutdown",
            "On",
            "ForceOff"
        ]
    );

    let inventory = bmc.inventory().await.unwrap();
    assert_eq!(inventory.warnings, Vec::<String>::new());
    assert_eq!(inventory.serial.as_deref(), Some("FAKE0001"));
    assert_eq!(
        inventory.uuid.as_deref(),
        Some("00000000-0000-4000-8000-000000000001")
    );
    assert_eq!(inventory.vendor.as_deref(), Some("Fake Computers"));
    assert_eq!(inventory.bios_version.as_deref(), Some("1.2.3"));
    assert_eq!(inventory.power_state, Some(PowerState::Off));
    assert_eq!(inventory.processor_count, Some(2));
    assert_eq!(inventory.memory_gib, Some(64.0));
    assert_eq!(inventory.processors.len(), 2);
    assert_eq!(inventory.processors[0].cores, Some(16));
    assert_eq!(inventory.memory.len(), 4);
    assert_eq!(inventory.memory[0].capacity_mib, Some(16384));
    let macs: Vec<_> = inventory
        .nics
        .iter()
        .filter_map(|n| n.mac.clone())
        .collect();
    assert_eq!(macs, ["52:54:00:00:01:00", "52:54:00:00:01:01"]);
    assert_eq!(inventory.drives.len(), 1);
    assert_eq!(inventory.drives[0].capacity_bytes, Some(960_197_124_096));
    let kinds: Vec<_> = inventory
        .pcie_devices
        .iter()
        .map(|d| d.kind.as_str())
        .collect();
    assert_eq!(kinds, ["pcie_device", "network_adapter"]);

    bmc.close().await.unwrap();
    assert_eq!(fake.open_sessions(), 0, "close deletes the session");
    // A call after close logs in again.
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(fake.open_sessions(), 1);
}

#[tokio::test]
async fn an_expired_session_is_renewed_once() {
    let (fake, bmc) = fake(FakeRedfishOptions::default()).await;
    fake.expire_sessions();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(fake.open_sessions(), 1, "logged in again");
    assert!(bmc.uses_session());
}

#[tokio::test]
async fn dropping_the_driver_deletes_its_session() {
    let (fake, bmc) = fake(FakeRedfishOptions::default()).await;
    assert_eq!(fake.open_sessions(), 1);
    drop(bmc);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.open_sessions() > 0 {
        assert!(Instant::now() < deadline, "the session was never deleted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn basic_auth_when_there_is_no_session_service() {
    let (fake, bmc) = fake(FakeRedfishOptions {
        sessions: false,
        ..FakeRedfishOptions::default()
    })
    .await;
    assert!(!bmc.uses_session());
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(fake.power(1), "On");
    bmc.close().await.unwrap();
}

#[tokio::test]
async fn vendor_quirks_if_match_no_boot_mode_no_member_count() {
    let (fake, bmc) = fake(FakeRedfishOptions {
        require_if_match: true,
        boot_mode_field: false,
        members_count: false,
        ..FakeRedfishOptions::default()
    })
    .await;
    bmc.set_boot(PXE_ONCE).await.unwrap();
    assert_eq!(fake.boot(1).0, "Pxe");
    // A second PATCH carries the fresh ETag, not the first one.
    bmc.set_boot(BootOverride {
        device: BootDevice::Http,
        ..PXE_ONCE
    })
    .await
    .unwrap();
    assert_eq!(fake.boot(1).0, "UefiHttp");
    let err = bmc
        .set_boot(BootOverride {
            mode: BootMode::Legacy,
            ..PXE_ONCE
        })
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::NotSupported { .. }), "{err}");
    assert!(err.to_string().contains("BootSourceOverrideMode"), "{err}");
    assert_eq!(bmc.inventory().await.unwrap().nics.len(), 2);
}

#[tokio::test]
async fn paged_collections_action_info_and_a_lost_etag_race() {
    let (fake, bmc) = fake(FakeRedfishOptions {
        page_size: Some(1),
        action_info: true,
        etag_race: true,
        members_count: false,
        ..FakeRedfishOptions::default()
    })
    .await;
    // One member per page: every member is still found through the nextLinks.
    let inventory = bmc.inventory().await.unwrap();
    assert_eq!(inventory.warnings, Vec::<String>::new());
    assert_eq!(
        (
            inventory.processors.len(),
            inventory.memory.len(),
            inventory.nics.len()
        ),
        (2, 4, 2)
    );
    // The allowed reset types come from the ActionInfo resource, which has no PowerCycle.
    let err = bmc.power(PowerAction::Cycle).await.unwrap_err();
    assert!(matches!(err, BmcError::NotSupported { .. }), "{err}");
    assert!(
        err.to_string().contains("the BMC allows On, ForceOff"),
        "{err}"
    );
    bmc.power(PowerAction::On).await.unwrap();
    bmc.power(PowerAction::Reset).await.unwrap();
    assert_eq!(fake.resets(), ["On", "ForceRestart"]);
    // The first PATCH loses a race (412): the driver reads the new ETag and tries again.
    bmc.set_boot(PXE_ONCE).await.unwrap();
    assert_eq!(fake.boot(1).0, "Pxe");
}

#[tokio::test]
async fn several_systems_need_a_path() {
    let fake = FakeRedfish::start(FakeRedfishOptions {
        systems: 3,
        ..FakeRedfishOptions::default()
    })
    .await
    .unwrap();
    let err = RedfishBmc::connect(config(&fake.url(), "password"))
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::AmbiguousSystem { ref systems, .. } if systems.len() == 3));
    assert!(err.to_string().contains("/redfish/v1/Systems/1"), "{err}");
    let url = format!("{}/redfish/v1/Systems/2", fake.url());
    let bmc = RedfishBmc::connect(config(&url, "password")).await.unwrap();
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(
        (fake.power(1).as_str(), fake.power(2).as_str()),
        ("Off", "On")
    );
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error_without_the_password() {
    for sessions in [true, false] {
        let fake = FakeRedfish::start(FakeRedfishOptions {
            sessions,
            ..FakeRedfishOptions::default()
        })
        .await
        .unwrap();
        let result = async {
            let bmc = RedfishBmc::connect(config(&fake.url(), "wrong-secret")).await?;
            bmc.power_state().await
        }
        .await;
        let err = result.unwrap_err();
        assert!(
            matches!(err, BmcError::Auth { .. }),
            "sessions={sessions}: {err}"
        );
        let text = format!("{err} {err:?}");
        assert!(
            text.contains(&fake.url().replace("redfish+http://", "")),
            "{text}"
        );
        assert!(text.contains("check the user name and password"), "{text}");
        assert!(!text.contains("wrong-secret"), "{text}");
    }
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_with_the_bmc_message() {
    let (fake, bmc) = fake(FakeRedfishOptions::default()).await;
    fake.set_fault(Fault::ServerErrors(2));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    fake.set_fault(Fault::ServerErrors(1000));
    let before = fake.requests();
    let err = bmc.power_state().await.unwrap_err();
    assert_eq!(fake.requests() - before, 4, "one try and three retries");
    match &err {
        BmcError::Refused { code, message, .. } => {
            assert_eq!(code, "HTTP 500");
            assert!(message.contains("internal service error"), "{message}");
        }
        other => panic!("expected Refused, got {other}"),
    }
}

#[tokio::test]
async fn a_hung_bmc_costs_one_timeout() {
    let (fake, bmc) = fake(FakeRedfishOptions::default()).await;
    fake.set_fault(Fault::Hang);
    let started = Instant::now();
    let err = bmc.power_state().await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(err.to_string().contains("no answer within 0.4s"), "{err}");
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error() {
    let (fake, bmc) = fake(FakeRedfishOptions::default()).await;
    fake.set_fault(Fault::MalformedJson);
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("malformed JSON"), "{err}");
    let err = RedfishBmc::connect(config(&fake.url(), "password"))
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn nobody_listening_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = RedfishBmc::connect(config(&format!("redfish+http://127.0.0.1:{port}"), "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains("check the address and port"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_ca_file_is_a_tls_error() {
    let mut config = config("redfish://127.0.0.1:1", "x");
    config.tls = TlsPolicy::CaFile("/nonexistent/ca.pem".into());
    let err = RedfishBmc::connect(config).await.unwrap_err();
    assert!(matches!(err, BmcError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn bmc_messages_come_from_extended_info() {
    let body = br#"{"error":{"code":"Base.1.8.GeneralError","message":"See ExtendedInfo",
        "@Message.ExtendedInfo":[{"Message":"The value Foo is not allowed.","Resolution":"Use Bar."},
        {"Message":"Second."}]}}"#;
    assert_eq!(
        bmc_message(body),
        "The value Foo is not allowed. (Use Bar.); Second."
    );
    // sushy-tools: no Message in ExtendedInfo, the text is in error.message.
    let body = br#"{"error":{"code":"Base.1.0.GeneralError","message":"Power state Bogus is not supported",
        "@Message.ExtendedInfo":[{"MessageId":"Base.1.0.GeneralError"}]}}"#;
    assert_eq!(bmc_message(body), "Power state Bogus is not supported");
    assert_eq!(
        bmc_message(b"<html>Internal Error</html>"),
        "<html>Internal Error</html>"
    );
    assert_eq!(bmc_message(b""), "(empty body)");
}

#[test]
fn reset_types_follow_what_the_bmc_allows() {
    let allowed = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(choose_reset_type(PowerAction::On, None), Some("On"));
    assert_eq!(
        choose_reset_type(PowerAction::On, Some(&allowed(&["ForceOn", "ForceOff"]))),
        Some("ForceOn")
    );
    assert_eq!(
        choose_reset_type(PowerAction::Reset, Some(&allowed(&["On", "PowerCycle"]))),
        Some("PowerCycle")
    );
    assert_eq!(
        choose_reset_type(PowerAction::Cycle, Some(&allowed(&["On", "ForceOff"]))),
        None
    );
}

#[test]
fn boot_patches() {
    let sushy = json!({"BootSourceOverrideMode": "UEFI",
        "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Cd", "Hdd", "UefiHttp"]});
    assert_eq!(
        boot_patch(PXE_ONCE, &sushy).unwrap(),
        json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once",
                        "BootSourceOverrideMode": "UEFI"}})
    );
    let old = json!({"BootSourceOverrideTarget": "None"});
    assert_eq!(
        boot_patch(
            BootOverride {
                device: BootDevice::Disk,
                persistent: true,
                mode: BootMode::Uefi
            },
            &old
        )
        .unwrap(),
        json!({"Boot": {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous"}})
    );
    let no_http = json!({"BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Hdd"]});
    let err = boot_patch(
        BootOverride {
            device: BootDevice::Http,
            ..PXE_ONCE
        },
        &no_http,
    )
    .unwrap_err();
    assert_eq!(err, "boot target UefiHttp (the BMC allows Pxe, Hdd)");
    // In Legacy mode the list lacks UefiHttp; switching to UEFI lets the BMC judge.
    let legacy = json!({"BootSourceOverrideMode": "Legacy",
        "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Hdd"]});
    let http_uefi = BootOverride {
        device: BootDevice::Http,
        ..PXE_ONCE
    };
    assert_eq!(
        boot_patch(http_uefi, &legacy).unwrap()["Boot"]["BootSourceOverrideTarget"],
        "UefiHttp"
    );
    let err = boot_patch(
        BootOverride {
            device: BootDevice::Http,
            persistent: false,
            mode: BootMode::Legacy,
        },
        &sushy,
    )
    .unwrap_err();
    assert!(err.contains("only in UEFI"), "{err}");
}

#[test]
fn links_keep_only_their_path() {
    assert_eq!(path_of("/redfish/v1/Systems/1"), "/redfish/v1/Systems/1");
    assert_eq!(
        path_of("https://evil.example.com/redfish/v1/Systems/1"),
        "/redfish/v1/Systems/1"
    );
    assert_eq!(path_of("http://h"), "/");
}

#[test]
fn power_states_parse() {
    assert_eq!(parse_power_state("On"), Some(PowerState::On));
    assert_eq!(
        parse_power_state("PoweringOff"),
        Some(PowerState::PoweringOff)
    );
    assert_eq!(parse_power_state("on"), None);
}
