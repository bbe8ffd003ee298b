//! The Redfish driver never panics and never hangs on whatever a BMC sends as its system
//! resource: random JSON built from the words the driver looks for (PowerState, Boot,
//! Actions, links to real and bogus resources, collections whose nextLink loops) is served
//! by the fake, and every operation must end in `Ok` or a typed error within its timeout.

use std::time::Duration;

use proptest::prelude::*;
use provisioner::bmc::fake_redfish::{FakeRedfish, FakeRedfishOptions};
use provisioner::bmc::redfish::RedfishBmc;
use provisioner::bmc::{
    Bmc, BmcConfig, BootDevice, BootMode, BootOverride, Credentials, PowerAction, Secret,
};
use serde_json::{Map, Value, json};

const KEYS: &[&str] = &[
    "PowerState",
    "Boot",
    "BootSourceOverrideTarget",
    "BootSourceOverrideMode",
    "BootSourceOverrideEnabled",
    "BootSourceOverrideTarget@Redfish.AllowableValues",
    "Actions",
    "#ComputerSystem.Reset",
    "target",
    "ResetType@Redfish.AllowableValues",
    "@Redfish.ActionInfo",
    "@odata.id",
    "@odata.etag",
    "Members",
    "Members@odata.nextLink",
    "Processors",
    "Memory",
    "EthernetInterfaces",
    "Storage",
    "Drives",
    "PCIeDevices",
    "NetworkAdapters",
    "Links",
    "Chassis",
    "MemorySummary",
    "TotalSystemMemoryGiB",
    "ProcessorSummary",
    "Count",
    "UUID",
    "SerialNumber",
    "MACAddress",
    "Id",
];

const STRINGS: &[&str] = &[
    "On",
    "Off",
    "PoweringOn",
    "Pxe",
    "Hdd",
    "UEFI",
    "ForceOff",
    "PowerCycle",
    "",
    "/redfish/v1/Systems/1",
    "/redfish/v1/Systems/1/Cpus",
    "/redfish/v1/Systems/1/Nics",
    "/redfish/v1/Systems/1/Oem/DoReset",
    "/redfish/v1/Chassis/1",
    "/redfish/v1/nowhere",
    "http://elsewhere.example/redfish/v1/Systems/1",
    "\u{0}\u{ffff}",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(STRINGS).prop_map(|s| json!(s)),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn word() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(STRINGS).prop_map(|s| json!(s)),
        1 => leaf(),
    ]
}

fn link() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => word().prop_map(|w| json!({ "@odata.id": w })),
        1 => value(),
    ]
}

/// A system resource: each part the driver reads is present, absent or mangled.
fn system() -> impl Strategy<Value = Value> {
    let boot = (
        prop::option::of(word()),
        prop::option::of(word()),
        prop::option::of(prop::collection::vec(word(), 0..4)),
    )
        .prop_map(|(target, mode, allowed)| {
            let mut boot = Map::new();
            if let Some(t) = target {
                boot.insert("BootSourceOverrideTarget".into(), t);
            }
            if let Some(m) = mode {
                boot.insert("BootSourceOverrideMode".into(), m);
            }
            if let Some(a) = allowed {
                boot.insert(
                    "BootSourceOverrideTarget@Redfish.AllowableValues".into(),
                    Value::Array(a),
                );
            }
            Value::Object(boot)
        });
    let reset = (
        prop::option::of(word()),
        prop::option::of(prop::collection::vec(word(), 0..5)),
        prop::option::of(word()),
    )
        .prop_map(|(target, allowed, info)| {
            let mut reset = Map::new();
            if let Some(t) = target {
                reset.insert("target".into(), t);
            }
            if let Some(a) = allowed {
                reset.insert("ResetType@Redfish.AllowableValues".into(), Value::Array(a));
            }
            if let Some(i) = info {
                reset.insert("@Redfish.ActionInfo".into(), i);
            }
            json!({ "#ComputerSystem.Reset": reset })
        });
    (
        prop::option::of(word()),
        prop::option::of(boot),
        prop::option::of(reset),
        prop::collection::vec(
            (
                prop::sample::select(
                    &[
                        "Processors",
                        "Memory",
                        "EthernetInterfaces",
                        "Storage",
                        "PCIeDevices",
                    ][..],
                ),
                link(),
            ),
            0..5,
        ),
        prop::option::of(prop::collection::vec(link(), 0..3)),
        prop::collection::vec((prop::sample::select(KEYS), value()), 0..4),
    )
        .prop_map(|(power, boot, actions, links, chassis, extra)| {
            let mut system: Map<String, Value> =
                extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some(p) = power {
                system.insert("PowerState".into(), p);
            }
            if let Some(b) = boot {
                system.insert("Boot".into(), b);
            }
            if let Some(a) = actions {
                system.insert("Actions".into(), a);
            }
            for (key, l) in links {
                system.insert(key.into(), l);
            }
            if let Some(c) = chassis {
                system.insert("Links".into(), json!({ "Chassis": c }));
            }
            Value::Object(system)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_system_json_gives_ok_or_a_typed_error(system in prop_oneof![4 => system(), 1 => value()]) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let fake = FakeRedfish::start(FakeRedfishOptions::default()).await.unwrap();
            let mut config = BmcConfig::new(
                format!("{}/redfish/v1/Systems/1", fake.url()).parse().unwrap(),
                Some(Credentials { username: "admin".into(), password: Secret::new("password") }),
            );
            config.timeout = Duration::from_secs(2);
            config.backoff = Duration::from_millis(1);
            let bmc = RedfishBmc::connect(config).await.unwrap();
            fake.set_system_json(Some(system));
            let all = async {
                let mut errors = vec![];
                errors.extend(bmc.check().await.err());
                errors.extend(bmc.power_state().await.err());
                errors.extend(bmc.power(PowerAction::On).await.err());
                errors.extend(bmc.power(PowerAction::Cycle).await.err());
                errors.extend(bmc.set_boot(BootOverride {
                    device: BootDevice::Pxe,
                    persistent: false,
                    mode: BootMode::Legacy,
                }).await.err());
                errors.extend(bmc.inventory().await.err());
                errors
            };
            // Each call is bounded by the timeout; six calls and their links in 60 s.
            let errors = tokio::time::timeout(Duration::from_secs(60), all)
                .await
                .expect("the driver hung");
            // Every error names the BMC first.
            let name = format!("{}/redfish/v1/Systems/1", fake.url());
            for e in errors {
                let text = e.to_string();
                assert!(text.starts_with(&name), "{text}");
            }
        });
    }
}
