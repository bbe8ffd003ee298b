//! An in-memory BMC for other modules' tests: power and boot changes land at once, every
//! call is recorded, and the next call can be made to fail with any [`BmcError`].
//!
//! It never touches the network.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Bmc, BmcError, BootOverride, Inventory, PowerAction, PowerState};
use crate::site::BmcUrl;

/// A call the fake received, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeCall {
    /// `check`.
    Check,
    /// `power_state`.
    PowerState,
    /// `power(action)`.
    Power(PowerAction),
    /// `set_boot(boot)`.
    SetBoot(BootOverride),
    /// `inventory`.
    Inventory,
    /// `close`.
    Close,
}

#[derive(Debug)]
struct State {
    power: PowerState,
    boot: Option<BootOverride>,
    inventory: Inventory,
    calls: Vec<FakeCall>,
    failures: VecDeque<BmcError>,
}

/// The fake. Clones share their state, so a test keeps one clone to look inside.
#[derive(Debug, Clone)]
pub struct FakeBmc {
    url: BmcUrl,
    state: Arc<Mutex<State>>,
}

impl FakeBmc {
    /// A powered-off system with the given inventory.
    pub fn new(url: BmcUrl, inventory: Inventory) -> FakeBmc {
        FakeBmc {
            url,
            state: Arc::new(Mutex::new(State {
                power: PowerState::Off,
                boot: None,
                inventory,
                calls: vec![],
                failures: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; keep its state readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next call (whatever it is) fail with `error`; queued errors are used in order.
    pub fn fail_next(&self, error: BmcError) {
        self.lock().failures.push_back(error);
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// The current power state, without recording a call.
    pub fn power_now(&self) -> PowerState {
        self.lock().power
    }

    /// The boot override set last, if any.
    pub fn boot_now(&self) -> Option<BootOverride> {
        self.lock().boot
    }

    fn record(&self, call: FakeCall) -> Result<MutexGuard<'_, State>, BmcError> {
        let mut state = self.lock();
        state.calls.push(call);
        match state.failures.pop_front() {
            Some(err) => Err(err),
            None => Ok(state),
        }
    }
}

impl Bmc for FakeBmc {
    fn url(&self) -> &BmcUrl {
        &self.url
    }

    async fn check(&self) -> Result<(), BmcError> {
        self.record(FakeCall::Check).map(drop)
    }

    async fn power_state(&self) -> Result<PowerState, BmcError> {
        Ok(self.record(FakeCall::PowerState)?.power)
    }

    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        let mut state = self.record(FakeCall::Power(action))?;
        state.power = action.target_state();
        // A one-time override is consumed by the boot the action causes.
        if matches!(state.boot, Some(b) if !b.persistent) && state.power == PowerState::On {
            state.boot = None;
        }
        Ok(())
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        self.record(FakeCall::SetBoot(boot))?.boot = Some(boot);
        Ok(())
    }

    async fn inventory(&self) -> Result<Inventory, BmcError> {
        let state = self.record(FakeCall::Inventory)?;
        let mut inventory = state.inventory.clone();
        inventory.power_state = Some(state.power);
        Ok(inventory)
    }

    async fn close(&self) -> Result<(), BmcError> {
        self.record(FakeCall::Close).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BootDevice, BootMode, wait_for_power};
    use super::*;
    use std::time::Duration;

    fn fake() -> FakeBmc {
        FakeBmc::new(
            "redfish://fake".parse().unwrap(),
            Inventory {
                serial: Some("S1".into()),
                ..Inventory::default()
            },
        )
    }

    #[tokio::test]
    async fn power_and_boot_land_and_are_recorded() {
        let bmc = fake();
        let pxe_once = BootOverride {
            device: BootDevice::Pxe,
            persistent: false,
            mode: BootMode::Uefi,
        };
        bmc.set_boot(pxe_once).await.unwrap();
        assert_eq!(bmc.boot_now(), Some(pxe_once));
        bmc.power(PowerAction::On).await.unwrap();
        wait_for_power(&bmc, PowerState::On, Duration::ZERO, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(bmc.boot_now(), None, "a one-time override is consumed");
        let inventory = bmc.inventory().await.unwrap();
        assert_eq!(inventory.serial.as_deref(), Some("S1"));
        assert_eq!(inventory.power_state, Some(PowerState::On));
        assert_eq!(
            bmc.calls(),
            vec![
                FakeCall::SetBoot(pxe_once),
                FakeCall::Power(PowerAction::On),
                FakeCall::PowerState,
                FakeCall::Inventory
            ]
        );
    }

    #[tokio::test]
    async fn injected_failures_come_once_in_order() {
        let bmc = fake();
        bmc.fail_next(BmcError::Unreachable {
            bmc: "redfish://fake:443".into(),
            detail: "injected".into(),
        });
        assert!(matches!(
            bmc.power(PowerAction::On).await,
            Err(BmcError::Unreachable { .. })
        ));
        assert_eq!(
            bmc.power_now(),
            PowerState::Off,
            "a failed call changes nothing"
        );
        bmc.power(PowerAction::On).await.unwrap();
        assert_eq!(bmc.power_now(), PowerState::On);
    }

    #[tokio::test]
    async fn waiting_times_out_with_the_state_seen() {
        let bmc = fake();
        let err = wait_for_power(
            &bmc,
            PowerState::On,
            Duration::from_millis(30),
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("still off"), "{err}");
    }
}
