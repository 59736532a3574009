//! The GPU self-check: a correct device passes, a wrong result is caught.

use hearth::DeviceKind;
use hearth::backend::selfcheck::{Fault, check, check_with};

#[test]
fn a_correct_gpu_passes_and_a_wrong_result_is_refused() {
    let gpu = DeviceKind::Wgpu.device().expect("wgpu (lavapipe)");
    pollster::block_on(check(&gpu)).expect("lavapipe computes the known products right");
    let err = pollster::block_on(check_with(&gpu, Fault::WrongResult)).expect_err("an injected wrong result");
    assert_eq!(err.kind(), "device_unusable");
    assert!(err.to_string().contains("Q4_1"), "names the first product that disagrees: {err}");
}

#[test]
fn the_cpu_agrees_with_itself() {
    let cpu = DeviceKind::Cpu.device().unwrap();
    pollster::block_on(check(&cpu)).unwrap();
    assert_eq!(pollster::block_on(check_with(&cpu, Fault::WrongResult)).unwrap_err().kind(), "device_unusable");
}
