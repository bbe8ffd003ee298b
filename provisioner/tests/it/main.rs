//! The fast tier of `provisioner`'s integration tests in one binary (one link
//! instead of one per file); the slow tier stays in `tests/*.rs`, one
//! `[[test]]` target each behind `slow-tests`.

#[path = "../common/mod.rs"]
mod common;

mod agent_api;
mod bmc_fuzz;
mod bmc_tls;
mod boot_http;
mod daemon_api;
mod daemon_power;
mod deploy;
mod executor;
mod image_cli;
mod kill9;
mod profile_cli;
mod site_load;
mod site_profiles;
mod site_proptest;
mod site_schemas;
mod timeouts;
