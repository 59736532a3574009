//! Test helpers, written from the formats' specifications, independently of the code under
//! test: a deterministic random source ([`rng`]), the tiny models' tokenizer ([`vocab`]), file
//! writers ([`writers`]), tiny random models ([`tiny`]) and the plain f32 reference forward
//! pass every result is compared with ([`reference`]).

#![allow(dead_code, unused_imports)]

#[cfg(not(target_arch = "wasm32"))]
pub mod parity;
pub mod reference;
pub mod rng;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
pub mod tiny;
pub mod vocab;
pub mod writers;

use std::collections::HashMap;

use half::{bf16, f16};

#[cfg(not(target_arch = "wasm32"))]
pub use parity::*;
pub use reference::*;
pub use rng::*;
#[cfg(not(target_arch = "wasm32"))]
pub use run::*;
pub use tiny::*;
pub use vocab::*;
pub use writers::*;

/// One check as two tests, `name::on_cpu` and `name::on_wgpu`: the same assertions on the CPU
/// path and on wgpu (lavapipe here). `each_device!(name, |device| body)` runs `body` with
/// `device` bound to each [`hearth::DeviceKind`]; `each_device!(check)` runs `check(device)`.
#[macro_export]
macro_rules! each_device {
    ($name:ident, |$device:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn on_cpu() {
                let $device = hearth::DeviceKind::Cpu;
                $body;
            }

            #[test]
            fn on_wgpu() {
                let $device = hearth::DeviceKind::Wgpu;
                $body;
            }
        }
    };
    ($check:ident) => {
        $crate::each_device!($check, |device| $check(device));
    };
}
