//! The emulated CUDA driver (docs/emulated-driver.md) and the GPU engine's host code on it.
//!
//! Each test runs one scenario in a child process (this test binary again, test `child`) with the
//! emulated driver first on `LD_LIBRARY_PATH` and the emulated device configured by environment: a
//! process loads one libcuda, once, so each device configuration needs its own process. The parent never
//! touches the driver. Without GPU kernels in the build (no nvcc) every test prints why it is skipped.
//!
//! Where the emulated driver is not there (not Linux, or a binary copied to the GPU machine by
//! `scripts/gpu-pack.sh`) the scenarios that state the driver's own behaviour on any device ("conformance":
//! launch errors, the shared-memory opt-in, captures, graph replay) run on the real driver instead, when it
//! has a device, so that a GPU run checks what the emulated driver claims; the others are skipped.
//!
//! What is checked: the driver's errors for a launch with wrong parameter bytes, an unknown kernel name,
//! more than 48 KiB of dynamic shared memory without the opt-in, a faulting kernel (sticky), a capture that
//! allocates or synchronises; a replayed graph runs its captured launches on the buffers' current
//! contents; events measure stream order; out of memory on a small device is the crate's typed
//! `OutOfMemory { memory: Device }`; the planner and module loading on other devices (sm_80, sm_75, none).

mod common;

use std::process::Command;
use std::sync::Arc;

use cuda_attention::cpu::{compare, reference};
use cuda_attention::gpu::build_info::{FATBIN, KERNELS_BUILT};
use cuda_attention::registry;
use cuda_attention::sys::AttentionParams;
use cuda_attention::{
    AttentionError, AttentionProblem, AttentionShape, DeviceTensors, Engine, ForwardOptions,
    KernelChoice, Memory, Tensor,
};
use cudarc::driver::sys::{
    self, CUfunction_attribute, CUgraphInstantiate_flags, CUresult, CUstreamCaptureMode,
};
use cudarc::driver::{CudaContext, CudaModule, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use half::bf16;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The folder holding the emulated driver (set by the build script; empty where none is built).
const DRIVER_DIR: &str = env!("CUDA_ATTENTION_EMULATED_DRIVER_DIR");
/// Names the scenario a child process runs.
const SCENARIO: &str = "CUDA_ATTENTION_EMULATED_DRIVER_SCENARIO";

/// Set in a child that runs on the real driver (conformance).
const ON_REAL_DRIVER: &str = "CUDA_ATTENTION_EMULATED_DRIVER_CONFORMANCE";

/// Whether the emulated driver this test was built with is on this machine.
fn emulated_driver_here() -> bool {
    !DRIVER_DIR.is_empty()
        && std::path::Path::new(DRIVER_DIR)
            .join("libcuda.so.1")
            .is_file()
}

/// Runs `name` on the emulated driver with `env` set (only there).
fn scenario(name: &str, env: &[(&str, &str)]) {
    run_scenario(name, env, false);
}

/// Runs `name` on the emulated driver, or, where it is not there, on the real driver (when it has a
/// device): a statement about the driver that holds on both.
fn conformance(name: &str) {
    run_scenario(name, &[], true);
}

/// Runs `scenario` in a child process; fails with its output unless it succeeds.
fn run_scenario(name: &str, env: &[(&str, &str)], portable: bool) {
    if !KERNELS_BUILT {
        println!("skipped: this build has no GPU kernels (nvcc was not found)");
        return;
    }
    let emulated = emulated_driver_here();
    if !emulated && !portable {
        println!("skipped: the emulated driver is not on this machine ({DRIVER_DIR:?})");
        return;
    }
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, name);
    if emulated {
        let library_path = match std::env::var("LD_LIBRARY_PATH") {
            Ok(old) if !old.is_empty() => format!("{DRIVER_DIR}:{old}"),
            _ => DRIVER_DIR.to_string(),
        };
        command.env("LD_LIBRARY_PATH", library_path);
    } else {
        command.env(ON_REAL_DRIVER, "1");
    }
    for var in [
        "CUDA_EMU_DEVICE_CC",
        "CUDA_EMU_DEVICE_SMS",
        "CUDA_EMU_DEVICE_SHARED_OPTIN",
        "CUDA_EMU_DEVICE_MEMORY",
        "CUDA_EMU_DEVICE_L2",
        "CUDA_EMU_DEVICE_COUNT",
        "CUDA_EMU_DEVICE_MEMORY_POOLS",
        "CUDA_EMU_DEVICE_NAME",
        "CUDA_EMU_DRIVER_TRACE",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("cannot run the child process");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.contains("scenario done"),
        "scenario {name} failed:\n{text}"
    );
    println!("{text}");
}

/// The child's side: runs the scenario named in the environment (nothing in the parent).
#[test]
fn child() {
    let Ok(name) = std::env::var(SCENARIO) else {
        return;
    };
    if std::env::var_os(ON_REAL_DRIVER).is_some()
        && cuda_attention::gpu::device_count().unwrap_or(0) == 0
    {
        println!("skipped: no emulated driver and no CUDA device");
        println!("scenario done");
        return;
    }
    match name.as_str() {
        "launch_errors" => launch_errors(),
        "shared_memory_opt_in" => shared_memory_opt_in(),
        "faulting_kernel_is_sticky" => faulting_kernel_is_sticky(),
        "capture_synchronise" => capture_synchronise(),
        "capture_allocate_sync" => capture_allocate_sync(),
        "capture_allocate_async" => capture_allocate_async(),
        "graph_replay" => graph_replay(),
        "ragged_graph_replay" => ragged_graph_replay(),
        "capture_with_event_tracking" => capture_with_event_tracking(),
        "events_stream_order" => events_stream_order(),
        "out_of_memory" => out_of_memory(),
        "other_devices" => other_devices(),
        "no_binary_for_device" => no_binary_for_device(),
        "no_device" => no_device(),
        "without_memory_pools" => without_memory_pools(),
        "ptx_for_a_newer_device" => ptx_for_a_newer_device(),
        "queries_follow_the_timeline" => queries_follow_the_timeline(),
        other => panic!("unknown scenario {other}"),
    }
    println!("scenario done");
}

#[test]
fn launch_with_wrong_parameters_or_unknown_kernel_fails_as_the_driver_does() {
    conformance("launch_errors");
}

#[test]
fn more_than_48_kib_of_shared_memory_needs_the_opt_in() {
    conformance("shared_memory_opt_in");
}

#[test]
fn a_faulting_kernel_leaves_a_sticky_error() {
    scenario("faulting_kernel_is_sticky", &[]);
}

#[test]
fn a_capture_that_synchronises_is_invalidated() {
    conformance("capture_synchronise");
}

#[test]
fn a_capture_that_allocates_synchronously_is_invalidated() {
    scenario(
        "capture_allocate_sync",
        &[("CUDA_EMU_DEVICE_MEMORY_POOLS", "0")],
    );
}

#[test]
fn a_stream_ordered_allocation_is_captured() {
    conformance("capture_allocate_async");
}

#[test]
fn a_replayed_graph_runs_the_captured_launches_on_current_contents() {
    conformance("graph_replay");
}

#[test]
fn a_captured_append_and_ragged_forward_replay_with_new_lengths() {
    conformance("ragged_graph_replay");
}

#[test]
fn capturing_forward_into_with_event_tracking_waits_on_uncaptured_events() {
    conformance("capture_with_event_tracking");
}

#[test]
fn events_measure_stream_order() {
    scenario("events_stream_order", &[]);
}

#[test]
fn out_of_device_memory_is_the_typed_error() {
    scenario("out_of_memory", &[("CUDA_EMU_DEVICE_MEMORY", "8M")]);
}

#[test]
fn an_sm80_device_with_less_shared_memory() {
    scenario(
        "other_devices",
        &[("CUDA_EMU_DEVICE_CC", "8.0"), ("CUDA_EMU_DEVICE_SMS", "7")],
    );
}

#[test]
fn a_device_the_fatbin_has_no_code_for() {
    scenario("no_binary_for_device", &[("CUDA_EMU_DEVICE_CC", "7.5")]);
}

#[test]
fn a_driver_without_devices() {
    scenario("no_device", &[("CUDA_EMU_DEVICE_COUNT", "0")]);
}

#[test]
fn a_device_without_memory_pools() {
    scenario(
        "without_memory_pools",
        &[("CUDA_EMU_DEVICE_MEMORY_POOLS", "0")],
    );
}

#[test]
fn a_newer_device_runs_the_ptx() {
    scenario("ptx_for_a_newer_device", &[("CUDA_EMU_DEVICE_CC", "10.0")]);
}

#[test]
fn queries_answer_not_ready_until_the_work_is_done_in_the_timeline() {
    scenario("queries_follow_the_timeline", &[]);
}

// ---- Helpers (child side) ------------------------------------------------------------------------

/// Parameters with every pointer NULL and every size 0.
fn zeroed_params() -> AttentionParams {
    // SAFETY: a plain C struct of pointers, integers and floats, for which all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
}

fn module(ctx: &Arc<CudaContext>) -> Arc<CudaModule> {
    ctx.load_module(Ptx::from_binary(FATBIN.to_vec()))
        .expect("the fatbin loads")
}

fn code(result: Result<(), DriverError>) -> CUresult {
    match result {
        Ok(()) => CUresult::CUDA_SUCCESS,
        Err(DriverError(code)) => code,
    }
}

fn kernel(name: &str) -> &'static registry::KernelSpec {
    registry::kernels()
        .iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("{name} is registered"))
}

/// A small bf16 problem with its inputs on the host.
struct Inputs {
    problem: AttentionProblem,
    q: Vec<bf16>,
    k: Vec<bf16>,
    v: Vec<bf16>,
}

fn inputs(shape: AttentionShape, seed: u64) -> Inputs {
    let problem = AttentionProblem::new(shape).with_causal(true);
    let mut rng = StdRng::seed_from_u64(seed);
    let len = |t| problem.required_len(t).unwrap();
    Inputs {
        q: common::random::<bf16>(&mut rng, len(Tensor::Q), 1.0),
        k: common::random::<bf16>(&mut rng, len(Tensor::K), 1.0),
        v: common::random::<bf16>(&mut rng, len(Tensor::V), 1.0),
        problem,
    }
}

fn assert_matches_reference(inputs: &Inputs, out: &[bf16], label: &str) {
    let Inputs { problem, q, k, v } = inputs;
    let expected = reference::reference(problem, q, k, v).unwrap();
    let allowed = compare::tolerance(problem, q, k, v, &expected).unwrap();
    let error = compare::compare_output(problem, out, &expected.out);
    assert!(
        error.max_abs <= allowed,
        "{label}: {error}, allowed {allowed:.3e}"
    );
}

// ---- Scenarios (child side) ----------------------------------------------------------------------

fn launch_errors() {
    let ctx = CudaContext::new(0).unwrap();
    let module = module(&ctx);
    // An unknown kernel name: CUDA_ERROR_NOT_FOUND, as cuModuleGetFunction answers.
    assert_eq!(
        module.load_function("no_such_kernel").map(|_| ()),
        Err(DriverError(CUresult::CUDA_ERROR_NOT_FOUND))
    );
    let softmax = kernel("naive_softmax");
    let function = module.load_function(softmax.name).unwrap();
    let stream = ctx.default_stream();
    let params = zeroed_params();
    let raw = |params: *mut *mut std::ffi::c_void,
               extra: *mut *mut std::ffi::c_void,
               block: u32| unsafe {
        sys::cuLaunchKernel(
            function.cu_function(),
            1,
            1,
            1,
            block,
            1,
            1,
            0,
            stream.cu_stream(),
            params,
            extra,
        )
    };
    // Parameters passed as one buffer (`extra`) of the wrong size.
    let mut bytes = [0u8; 100];
    let mut size = bytes.len();
    let mut extra: [*mut std::ffi::c_void; 5] = [
        std::ptr::without_provenance_mut(1), // CU_LAUNCH_PARAM_BUFFER_POINTER
        bytes.as_mut_ptr().cast(),
        std::ptr::without_provenance_mut(2), // CU_LAUNCH_PARAM_BUFFER_SIZE
        (&mut size as *mut usize).cast(),
        std::ptr::null_mut(), // CU_LAUNCH_PARAM_END
    ];
    let block = softmax.threads();
    assert_eq!(
        raw(std::ptr::null_mut(), extra.as_mut_ptr(), block),
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    // Both kernelParams and extra; neither.
    let mut args = [(&params as *const AttentionParams).cast_mut().cast()];
    assert_eq!(
        raw(args.as_mut_ptr(), extra.as_mut_ptr(), block),
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    assert_eq!(
        raw(std::ptr::null_mut(), std::ptr::null_mut(), block),
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    // More threads than the kernel's __launch_bounds__; more than any block may have.
    assert_eq!(
        raw(args.as_mut_ptr(), std::ptr::null_mut(), block * 2),
        CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
    );
    assert_eq!(
        raw(args.as_mut_ptr(), std::ptr::null_mut(), 2048),
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    // The parameter table the driver reads from the cubin: one AttentionParams. It is 64-byte aligned (it
    // carries the sm_90a kernels' TMA tensor maps), and ptxas places it 48 bytes into the parameter area,
    // which starts at constant-bank offset 0x210 (528 + 48 = 576, a multiple of 64).
    let (mut offset, mut bytes) = (usize::MAX, 0usize);
    let info =
        unsafe { sys::cuFuncGetParamInfo(function.cu_function(), 0, &mut offset, &mut bytes) };
    assert_eq!(info, CUresult::CUDA_SUCCESS);
    assert_eq!(std::mem::align_of::<AttentionParams>(), 64);
    assert_eq!(
        (offset, bytes),
        (48, std::mem::size_of::<AttentionParams>())
    );
    assert_eq!(
        unsafe { sys::cuFuncGetParamInfo(function.cu_function(), 1, &mut offset, &mut bytes) },
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    // Nothing above ran or broke the context.
    let buffer = stream.alloc_zeros::<f32>(4).unwrap();
    assert_eq!(stream.clone_dtoh(&buffer).unwrap(), vec![0.0; 4]);
}

fn shared_memory_opt_in() {
    let ctx = CudaContext::new(0).unwrap();
    let module = module(&ctx);
    let optin = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .unwrap();
    // A flash instantiation whose tile needs more than 48 KiB.
    let spec = registry::kernels()
        .iter()
        .filter(|k| k.family == registry::KernelFamily::Flash)
        .find(|k| {
            let bytes = k.shared_bytes_for(*k.head_dims.end());
            bytes > 48 * 1024 && bytes <= optin as u64
        })
        .expect("a flash kernel needing more than 48 KiB");
    let needed = spec.shared_bytes_for(*spec.head_dims.end()) as u32;
    let function = module.load_function(spec.name).unwrap();
    let attribute = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
    assert_eq!(function.get_attribute(attribute).unwrap(), 48 * 1024);
    let stream = ctx.default_stream();
    let params = zeroed_params();
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: spec.block,
        shared_mem_bytes: needed,
    };
    let launch = || unsafe {
        stream
            .launch_builder(&function)
            .arg(&params)
            .launch(cfg)
            .map(|_| ())
    };
    assert_eq!(
        code(launch()),
        CUresult::CUDA_ERROR_INVALID_VALUE,
        "{} with {needed} bytes of shared memory and no opt-in",
        spec.name
    );
    // The opt-in is bounded by the device's limit.
    assert_eq!(
        code(function.set_attribute(attribute, optin + 1)),
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    function.set_attribute(attribute, needed as i32).unwrap();
    assert_eq!(function.get_attribute(attribute).unwrap(), needed as i32);

    // The engine opts in at load: its flash forward at the largest head dim of that kernel runs.
    let engine = Engine::new(0).unwrap();
    let head_dim = *spec.head_dims.end();
    let data = inputs(AttentionShape::new(1, 19, 1, head_dim), 3);
    let stream = engine.default_stream();
    let (q, k, v) = (
        stream.clone_htod(&data.q).unwrap(),
        stream.clone_htod(&data.k).unwrap(),
        stream.clone_htod(&data.v).unwrap(),
    );
    let options = ForwardOptions::default().with_kernel(KernelChoice::Flash);
    let out = engine.forward(&data.problem, options, &q, &k, &v).unwrap();
    let out = stream.clone_dtoh(&out.out).unwrap();
    assert_matches_reference(&data, &out, spec.name);
}

fn faulting_kernel_is_sticky() {
    let ctx = CudaContext::new(0).unwrap();
    let module = module(&ctx);
    let spec = kernel("naive_softmax");
    let function = module.load_function(spec.name).unwrap();
    let stream = ctx.default_stream();
    // Scores pointing at host memory the device never allocated: the launch is accepted (as on a GPU,
    // the fault comes later), then every call in the context fails.
    let mut host = vec![0f32; 64];
    let params = AttentionParams {
        scores: host.as_mut_ptr(),
        batch: 1,
        seq_q: 4,
        seq_k: 4,
        heads_q: 1,
        heads_kv: 1,
        head_dim: 8,
        heads_ratio: 1,
        window_left: -1,
        window_right: -1,
        ..zeroed_params()
    };
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: spec.block,
        shared_mem_bytes: spec.shared_bytes_for(8) as u32,
    };
    unsafe { stream.launch_builder(&function).arg(&params).launch(cfg) }.unwrap();
    assert_eq!(
        code(stream.synchronize()),
        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS
    );
    assert_eq!(
        stream.alloc_zeros::<f32>(4).map(|_| ()),
        Err(DriverError(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS))
    );
}

fn capture_synchronise() {
    let ctx = CudaContext::new(0).unwrap();
    // Without event tracking: the memset below would otherwise wait on an event recorded before the
    // capture (capture_with_event_tracking).
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream().unwrap();
    let mut buffer = stream.alloc_zeros::<u8>(64).unwrap();
    stream.synchronize().unwrap();
    // Synchronising the capturing stream: refused, and the capture is invalidated.
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL)
        .unwrap();
    stream.memset_zeros(&mut buffer).unwrap();
    assert_eq!(
        code(stream.synchronize()),
        CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
    );
    assert_eq!(
        stream.end_capture(CUgraphInstantiate_flags(0)).map(|_| ()),
        Err(DriverError(CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED))
    );
    // Synchronising the context while a stream captures: the same.
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    assert_eq!(
        code(ctx.synchronize()),
        CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
    );
    assert_eq!(
        stream.end_capture(CUgraphInstantiate_flags(0)).map(|_| ()),
        Err(DriverError(CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED))
    );
    // The legacy stream cannot be captured.
    assert_eq!(
        code(
            ctx.default_stream()
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL)
        ),
        CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
    );
    // After the failed captures the stream works again.
    stream.memset_zeros(&mut buffer).unwrap();
    stream.synchronize().unwrap();
}

fn capture_allocate_sync() {
    // Without memory pools cudarc allocates with cuMemAlloc, which a global-mode capture forbids.
    let ctx = CudaContext::new(0).unwrap();
    assert!(!ctx.has_async_alloc());
    let stream = ctx.new_stream().unwrap();
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL)
        .unwrap();
    assert_eq!(
        stream.alloc_zeros::<f32>(16).map(|_| ()),
        Err(DriverError(CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED))
    );
    assert_eq!(
        stream.end_capture(CUgraphInstantiate_flags(0)).map(|_| ()),
        Err(DriverError(CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED))
    );
    // Outside a capture the same allocation works.
    let buffer = stream.alloc_zeros::<f32>(16).unwrap();
    assert_eq!(stream.clone_dtoh(&buffer).unwrap(), vec![0.0; 16]);
}

fn capture_allocate_async() {
    // With memory pools (the default, as on H100) an allocation on the capturing stream becomes an
    // allocation node of the graph; the memset is captured, not run.
    let ctx = CudaContext::new(0).unwrap();
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream().unwrap();
    let mut target = stream.clone_htod(&[7u8; 32]).unwrap();
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let scratch = stream.alloc_zeros::<u8>(32).unwrap();
    stream.memcpy_dtod(&scratch, &mut target).unwrap();
    let graph = stream
        .end_capture(CUgraphInstantiate_flags(0))
        .unwrap()
        .expect("a graph");
    assert_eq!(stream.clone_dtoh(&target).unwrap(), vec![7u8; 32]);
    graph.launch().unwrap();
    assert_eq!(stream.clone_dtoh(&target).unwrap(), vec![0u8; 32]);
    drop(scratch);
}

/// Buffers for one forward_into call on `stream`.
struct DeviceProblem {
    q: cudarc::driver::CudaSlice<bf16>,
    k: cudarc::driver::CudaSlice<bf16>,
    v: cudarc::driver::CudaSlice<bf16>,
    out: cudarc::driver::CudaSlice<bf16>,
}

fn upload(stream: &Arc<cudarc::driver::CudaStream>, data: &Inputs) -> DeviceProblem {
    DeviceProblem {
        q: stream.clone_htod(&data.q).unwrap(),
        k: stream.clone_htod(&data.k).unwrap(),
        v: stream.clone_htod(&data.v).unwrap(),
        out: stream
            .alloc_zeros::<bf16>(data.problem.required_len(Tensor::Out).unwrap())
            .unwrap(),
    }
}

fn forward_into(
    engine: &Engine,
    stream: &cudarc::driver::CudaStream,
    plan: &cuda_attention::Plan,
    buffers: &mut DeviceProblem,
) -> cuda_attention::Result<()> {
    engine.forward_into(
        stream,
        plan,
        DeviceTensors {
            q: &buffers.q,
            k: &buffers.k,
            v: &buffers.v,
            out: &mut buffers.out,
            lse: None,
            weights: None,
            workspace: None,
            alibi_slopes: None,
            sinks: None,
            cu_seqlens_q: None,
            cu_seqlens_k: None,
            seqused_k: None,
            block_table: None,
            block_row_offsets: None,
            block_col_indices: None,
        },
    )
}

fn graph_replay() {
    let engine = Engine::new(0).unwrap();
    // cudarc's event tracking would make the captured launch wait on events recorded before the capture
    // (see capture_with_event_tracking): a program that captures turns it off before allocating.
    unsafe { engine.context().disable_event_tracking() };
    let stream = engine.context().new_stream().unwrap();
    let first = inputs(AttentionShape::new(1, 40, 2, 64), 11);
    let second = inputs(AttentionShape::new(1, 40, 2, 64), 12);
    let plan = engine
        .plan::<bf16>(
            &first.problem,
            ForwardOptions::default().with_kernel(KernelChoice::Flash),
        )
        .unwrap();
    let mut buffers = upload(&stream, &first);
    stream.synchronize().unwrap();
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    forward_into(&engine, &stream, &plan, &mut buffers).unwrap();
    let graph = stream
        .end_capture(CUgraphInstantiate_flags(0))
        .unwrap()
        .expect("a graph");
    // Captured, not run: the output is still zero.
    let untouched = stream.clone_dtoh(&buffers.out).unwrap();
    assert!(untouched.iter().all(|x| x.to_f32() == 0.0));
    graph.launch().unwrap();
    let out = stream.clone_dtoh(&buffers.out).unwrap();
    assert_matches_reference(&first, &out, "first replay");
    // New contents in the same buffers: the replay reads them (the captured parameters are pointers).
    stream.memcpy_htod(&second.q, &mut buffers.q).unwrap();
    stream.memcpy_htod(&second.k, &mut buffers.k).unwrap();
    stream.memcpy_htod(&second.v, &mut buffers.v).unwrap();
    graph.launch().unwrap();
    let out = stream.clone_dtoh(&buffers.out).unwrap();
    assert_matches_reference(&second, &out, "second replay");
}

/// The serving step as a server captures it: append one new token per sequence to a paged cache, then the
/// ragged forward over the cache, captured once into a CUDA graph and replayed over several steps in
/// which only device buffers change (the new rows, their slots, the key counts, the queries). Each replay
/// is checked against the f64 reference of the host's mirror of the cache (appended by the CPU backend).
/// The capture itself would fail if either call allocated, synchronised or copied (the driver's rules).
fn ragged_graph_replay() {
    use cuda_attention::cpu::ragged::for_each_sequence;
    use cuda_attention::cpu::CpuBackend;
    use cuda_attention::{DeviceKvAppend, HostKvAppend, KeyStorage, Metadata, Paging, Ragged};
    let engine = Engine::new(0).unwrap();
    unsafe { engine.context().disable_event_tracking() };
    let stream = engine.context().new_stream().unwrap();
    let (batch, heads_q, heads_kv, d, page_size, max_k) =
        (3usize, 4usize, 2usize, 64usize, 16usize, 64usize);
    let paging = Paging::new(batch * max_k / page_size, page_size, max_k);
    let problem = AttentionProblem::ragged(
        AttentionShape {
            batch,
            seq_q: 1,
            seq_k: max_k,
            heads_q,
            heads_kv,
            head_dim: d,
        },
        Ragged {
            total_q: batch,
            keys: KeyStorage::Paged(paging),
            seqused_k: true,
        },
    )
    .with_causal(true);
    let plan = engine
        .plan::<bf16>(&problem, ForwardOptions::default().with_lse(true))
        .unwrap();
    let mut rng = StdRng::seed_from_u64(31);
    let cache_len = problem.required_len(Tensor::K).unwrap();
    // The host mirror of the cache; unused slots hold NaN, which must never reach the output.
    let mut k_host = vec![bf16::from_f32(f32::NAN); cache_len];
    let mut v_host = k_host.clone();
    let table: Vec<i32> = (0..batch * paging.block_table_stride)
        .map(|i| ((i * 5) % paging.num_pages) as i32)
        .collect();
    let cu_q: Vec<i32> = (0..=batch as i32).collect();
    let mut lengths = vec![3i32, 0, 20];
    // Prefill on the host, then upload everything once.
    for b in 0..batch {
        for n in 0..lengths[b] as usize {
            let slot = [
                i64::from(table[b * paging.block_table_stride + n / page_size]) * page_size as i64
                    + (n % page_size) as i64,
            ];
            let k_new = common::random::<bf16>(&mut rng, heads_kv * d, 1.0);
            let v_new = common::random::<bf16>(&mut rng, heads_kv * d, 1.0);
            CpuBackend
                .append_kv_into(
                    &problem,
                    1,
                    HostKvAppend {
                        k_new: &k_new,
                        v_new: &v_new,
                        slot_mapping: &slot,
                        k_cache: &mut k_host,
                        v_cache: &mut v_host,
                    },
                )
                .unwrap();
        }
    }
    let mut k_cache = stream.clone_htod(&k_host).unwrap();
    let mut v_cache = stream.clone_htod(&v_host).unwrap();
    let mut q = stream.alloc_zeros::<bf16>(batch * heads_q * d).unwrap();
    let mut k_new = stream.alloc_zeros::<bf16>(batch * heads_kv * d).unwrap();
    let mut v_new = stream.alloc_zeros::<bf16>(batch * heads_kv * d).unwrap();
    let mut slots = stream.alloc_zeros::<i64>(batch).unwrap();
    let mut used = stream.alloc_zeros::<i32>(batch).unwrap();
    let cu_q_dev = stream.clone_htod(&cu_q).unwrap();
    let table_dev = stream.clone_htod(&table).unwrap();
    let mut out = stream.alloc_zeros::<bf16>(batch * heads_q * d).unwrap();
    let mut lse = stream.alloc_zeros::<f32>(batch * heads_q).unwrap();
    stream.synchronize().unwrap();

    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let appended = engine.append_kv_into(
        &stream,
        &problem,
        batch,
        DeviceKvAppend {
            k_new: &k_new,
            v_new: &v_new,
            slot_mapping: &slots,
            k_cache: &mut k_cache,
            v_cache: &mut v_cache,
        },
    );
    let forward = engine.forward_into(
        &stream,
        &plan,
        DeviceTensors::new(&q, &k_cache, &v_cache, &mut out)
            .with_lse(&mut lse)
            .with_metadata(&cu_q_dev, None, Some(&used), Some(&table_dev)),
    );
    let graph = stream
        .end_capture(CUgraphInstantiate_flags(0))
        .unwrap()
        .expect("a graph");
    appended.unwrap();
    forward.unwrap();

    for step in 0..3 {
        // This step's new tokens: one per sequence, sequence 1 is padding at step 0 (slot -1).
        let step_slots: Vec<i64> = (0..batch)
            .map(|b| {
                if step == 0 && b == 1 {
                    return -1;
                }
                let n = lengths[b] as usize;
                i64::from(table[b * paging.block_table_stride + n / page_size]) * page_size as i64
                    + (n % page_size) as i64
            })
            .collect();
        let k_rows = common::random::<bf16>(&mut rng, batch * heads_kv * d, 1.0);
        let v_rows = common::random::<bf16>(&mut rng, batch * heads_kv * d, 1.0);
        let q_rows = common::random::<bf16>(&mut rng, batch * heads_q * d, 1.0);
        CpuBackend
            .append_kv_into(
                &problem,
                batch,
                HostKvAppend {
                    k_new: &k_rows,
                    v_new: &v_rows,
                    slot_mapping: &step_slots,
                    k_cache: &mut k_host,
                    v_cache: &mut v_host,
                },
            )
            .unwrap();
        for (b, slot) in step_slots.iter().enumerate() {
            if *slot >= 0 {
                lengths[b] += 1;
            }
        }
        stream.memcpy_htod(&step_slots, &mut slots).unwrap();
        stream.memcpy_htod(&k_rows, &mut k_new).unwrap();
        stream.memcpy_htod(&v_rows, &mut v_new).unwrap();
        stream.memcpy_htod(&q_rows, &mut q).unwrap();
        stream.memcpy_htod(&lengths, &mut used).unwrap();
        graph.launch().unwrap();
        let got = stream.clone_dtoh(&out).unwrap();
        let metadata = Metadata {
            cu_seqlens_q: &cu_q,
            cu_seqlens_k: None,
            seqused_k: Some(&lengths),
            block_table: Some(&table),
        };
        for_each_sequence(&problem, &metadata, &q_rows, &k_host, &v_host, |seq| {
            let expected = reference::reference(&seq.problem, &seq.q, &seq.k, &seq.v)?;
            let allowed = compare::tolerance(&seq.problem, &seq.q, &seq.k, &seq.v, &expected)?;
            let rows: Vec<f32> = got[seq.index * heads_q * d..][..heads_q * d]
                .iter()
                .map(|x| x.to_f32())
                .collect();
            let error = compare::compare_contiguous(&rows, &expected.out);
            assert!(
                error.max_abs <= allowed,
                "step {step} sequence {}: {error}, allowed {allowed:.3e}",
                seq.index
            );
            Ok(())
        })
        .unwrap();
        // The replayed append wrote exactly what the host mirror holds.
        let cache_now = stream.clone_dtoh(&k_cache).unwrap();
        assert!(
            cache_now
                .iter()
                .zip(&k_host)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "step {step}: k cache"
        );
    }
}

fn capture_with_event_tracking() {
    // cudarc's default: with a second stream every buffer records read and write events, and using a
    // buffer makes the stream wait on them. In a capture that wait is on an event recorded outside it,
    // which the driver refuses ("It is invalid to wait on a non-captured event from a stream which is
    // being captured", CUDA programming guide; cudarc's own graph test turns tracking off for this).
    let engine = Engine::new(0).unwrap();
    let stream = engine.context().new_stream().unwrap();
    let data = inputs(AttentionShape::new(1, 16, 1, 64), 5);
    let plan = engine
        .plan::<bf16>(&data.problem, ForwardOptions::default())
        .unwrap();
    let mut buffers = upload(&stream, &data);
    stream.synchronize().unwrap();
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let result = forward_into(&engine, &stream, &plan, &mut buffers);
    println!("forward_into during capture with event tracking: {result:?}");
    assert!(
        matches!(
            result,
            Err(AttentionError::Driver {
                source: DriverError(CUresult::CUDA_ERROR_STREAM_CAPTURE_ISOLATION),
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        stream.end_capture(CUgraphInstantiate_flags(0)).map(|_| ()),
        Err(DriverError(CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED))
    );
}

fn events_stream_order() {
    let engine = Engine::new(0).unwrap();
    let ctx = engine.context().clone();
    let (busy, idle) = (ctx.new_stream().unwrap(), ctx.new_stream().unwrap());
    // Naive f32 at 96 x 96 with 4 heads: a few tens of milliseconds on the emulator.
    let problem = AttentionProblem::new(AttentionShape::new(1, 96, 4, 64));
    let mut rng = StdRng::seed_from_u64(1);
    let len = problem.required_len(Tensor::Q).unwrap();
    let x = common::random::<f32>(&mut rng, len, 1.0);
    let plan = engine
        .plan::<f32>(
            &problem,
            ForwardOptions::default().with_kernel(KernelChoice::Naive),
        )
        .unwrap();
    let q = busy.clone_htod(&x).unwrap();
    let mut out = busy.alloc_zeros::<f32>(len).unwrap();
    let mut workspace = busy.alloc_zeros::<u8>(plan.workspace_bytes()).unwrap();
    let mut run = || {
        engine
            .forward_into(
                &busy,
                &plan,
                DeviceTensors {
                    q: &q,
                    k: &q,
                    v: &q,
                    out: &mut out,
                    lse: None,
                    weights: None,
                    workspace: Some(&mut workspace),
                    alibi_slopes: None,
                    sinks: None,
                    cu_seqlens_q: None,
                    cu_seqlens_k: None,
                    seqused_k: None,
                    block_table: None,
                    block_row_offsets: None,
                    block_col_indices: None,
                },
            )
            .unwrap()
    };
    let timed = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let event = || ctx.new_event(timed).unwrap();
    busy.synchronize().unwrap();

    // Around work on the same stream: the events span it.
    let (a, b) = (event(), event());
    a.record(&busy).unwrap();
    run();
    b.record(&busy).unwrap();
    let kernel_ms = a.elapsed_ms(&b).unwrap();
    // Around nothing on the idle stream while the busy one works: the events span no work.
    let (c, d) = (event(), event());
    c.record(&idle).unwrap();
    run();
    d.record(&idle).unwrap();
    let idle_ms = c.elapsed_ms(&d).unwrap();
    // The idle stream waits for the busy one's work: now the span includes it.
    let (e, f) = (event(), event());
    e.record(&idle).unwrap();
    run();
    idle.wait(&busy.record_event(None).unwrap()).unwrap();
    f.record(&idle).unwrap();
    let waited_ms = e.elapsed_ms(&f).unwrap();
    println!(
        "kernel {kernel_ms:.3} ms, idle stream {idle_ms:.3} ms, after a wait {waited_ms:.3} ms"
    );
    assert!(kernel_ms > 0.0);
    assert!(
        idle_ms < kernel_ms / 2.0,
        "idle {idle_ms} vs kernel {kernel_ms}"
    );
    assert!(
        waited_ms >= kernel_ms / 2.0,
        "waited {waited_ms} vs kernel {kernel_ms}"
    );
    // Events created without timing cannot be timed.
    let untimed = busy.record_event(None).unwrap();
    assert_eq!(
        untimed.elapsed_ms(&b).map(|_| ()),
        Err(DriverError(CUresult::CUDA_ERROR_INVALID_HANDLE))
    );
}

fn out_of_memory() {
    let engine = Engine::new(0).unwrap();
    let (free, total) = engine.context().mem_get_info().unwrap();
    assert_eq!(total, 8 << 20);
    assert!(free <= total);
    // f32 naive with the weights: 1 x 4 x 1024 x 1024 x 4 bytes = 16 MiB of weights.
    let problem = AttentionProblem::new(AttentionShape::new(1, 1024, 4, 32));
    let len = problem.required_len(Tensor::Q).unwrap();
    let stream = engine.default_stream();
    let x = stream.clone_htod(&vec![0.5f32; len]).unwrap();
    let options = ForwardOptions::default()
        .with_kernel(KernelChoice::Naive)
        .with_weights(true);
    let result = engine.forward(&problem, options, &x, &x, &x);
    println!("forward on an 8 MiB device: {:?}", result.as_ref().err());
    assert!(
        matches!(
            result,
            Err(AttentionError::OutOfMemory {
                memory: Memory::Device,
                ..
            })
        ),
        "{:?}",
        result.err()
    );
    // The driver's own answer to an allocation beyond the device.
    assert_eq!(
        stream.alloc_zeros::<u8>(16 << 20).map(|_| ()),
        Err(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY))
    );
    // What fits still runs.
    let small = AttentionProblem::new(AttentionShape::new(1, 64, 4, 32));
    let out = engine
        .forward(
            &small,
            ForwardOptions::default().with_kernel(KernelChoice::Naive),
            &x,
            &x,
            &x,
        )
        .unwrap();
    assert_eq!(out.out.len(), small.required_len(Tensor::Out).unwrap());
}

fn other_devices() {
    let engine = Engine::new(0).unwrap();
    let info = engine.device();
    assert_eq!(info.compute_capability, (8, 0));
    assert_eq!(info.sm_count, 7);
    assert_eq!(info.shared_memory_per_block_optin, 166912);
    // Every flash instantiation either fits the sm_80 opt-in or is refused by the planner, never at launch.
    for head_dim in [64, 128, 256] {
        let data = inputs(AttentionShape::new(1, 17, 1, head_dim), 7);
        match engine.plan::<bf16>(
            &data.problem,
            ForwardOptions::default().with_kernel(KernelChoice::Flash),
        ) {
            Ok(_) => {
                let stream = engine.default_stream();
                let (q, k, v) = (
                    stream.clone_htod(&data.q).unwrap(),
                    stream.clone_htod(&data.k).unwrap(),
                    stream.clone_htod(&data.v).unwrap(),
                );
                let options = ForwardOptions::default().with_kernel(KernelChoice::Flash);
                let out = engine.forward(&data.problem, options, &q, &k, &v).unwrap();
                let out = stream.clone_dtoh(&out.out).unwrap();
                assert_matches_reference(&data, &out, &format!("sm_80 d{head_dim}"));
            }
            Err(error) => {
                println!("d{head_dim} on sm_80: {error}");
                assert!(matches!(error, AttentionError::KernelUnsupported { .. }));
            }
        }
    }
}

fn no_binary_for_device() {
    // sm_75: the fatbin holds sm_80 and sm_90a SASS and compute_80 PTX, none of which a 7.5 device runs.
    let error = Engine::new(0).expect_err("no code for sm_75");
    println!("Engine::new on sm_75: {error}");
    assert!(
        matches!(
            error,
            AttentionError::Driver {
                source: DriverError(CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU),
                ..
            }
        ),
        "{error:?}"
    );
}

fn no_device() {
    // A driver that sees no GPU (cuInit: CUDA_ERROR_NO_DEVICE): zero devices, and the engine's typed
    // NoDevice, on which the CLI falls back to the CPU backend.
    assert_eq!(cuda_attention::gpu::device_count().unwrap(), 0);
    let error = Engine::new(0).expect_err("no device");
    println!("Engine::new with no device: {error}");
    assert!(
        matches!(
            error,
            AttentionError::NoDevice {
                ordinal: 0,
                count: 0
            }
        ),
        "{error:?}"
    );
}

fn without_memory_pools() {
    // cudarc allocates with cuMemAlloc and frees with cuMemFree (after synchronising the stream).
    let engine = Engine::new(0).unwrap();
    assert!(!engine.context().has_async_alloc());
    let stream = engine.default_stream();
    for (seq_k, kernel) in [
        (23, KernelChoice::Flash),
        (23, KernelChoice::Naive),
        (0, KernelChoice::Naive),
    ] {
        let shape = AttentionShape {
            batch: 1,
            seq_q: 9,
            seq_k,
            heads_q: 2,
            heads_kv: 2,
            head_dim: 64,
        };
        let data = inputs(shape, 9);
        let options = ForwardOptions::default()
            .with_kernel(kernel)
            .with_lse(true)
            .with_weights(kernel == KernelChoice::Naive);
        // At least one element each (cuMemAlloc refuses 0 bytes): k and v are empty when seq_k is 0.
        let upload = |x: &[bf16]| {
            let padded = if x.is_empty() {
                vec![bf16::ZERO]
            } else {
                x.to_vec()
            };
            stream.clone_htod(&padded).unwrap()
        };
        let (q, k, v) = (upload(&data.q), upload(&data.k), upload(&data.v));
        let out = engine
            .forward(&data.problem, options, &q, &k, &v)
            .unwrap_or_else(|e| panic!("{kernel:?} with seq_k {seq_k}: {e}"));
        let host = stream.clone_dtoh(&out.out).unwrap();
        assert_matches_reference(&data, &host, &format!("{kernel:?} seq_k {seq_k}"));
    }
}

fn ptx_for_a_newer_device() {
    // sm_100: no SASS in the fatbin (sm_80, sm_90a), so the driver JIT-compiles the compute_80 PTX; the
    // kernels still run (the PTX entry is compressed: names come from the emulator's registry).
    let engine = Engine::new(0).unwrap();
    assert_eq!(engine.device().compute_capability, (10, 0));
    let data = inputs(AttentionShape::new(1, 21, 2, 64), 4);
    let stream = engine.default_stream();
    let (q, k, v) = (
        stream.clone_htod(&data.q).unwrap(),
        stream.clone_htod(&data.k).unwrap(),
        stream.clone_htod(&data.v).unwrap(),
    );
    let options = ForwardOptions::default().with_kernel(KernelChoice::Flash);
    let out = engine.forward(&data.problem, options, &q, &k, &v).unwrap();
    let out = stream.clone_dtoh(&out.out).unwrap();
    assert_matches_reference(&data, &out, "sm_100 through PTX");
}

fn queries_follow_the_timeline() {
    // The emulator runs the work when it is enqueued, but a query answers from the timeline: right after
    // enqueueing a few milliseconds of work it is not done, after a synchronisation it is.
    let engine = Engine::new(0).unwrap();
    let ctx = engine.context().clone();
    let stream = ctx.new_stream().unwrap();
    let problem = AttentionProblem::new(AttentionShape::new(1, 96, 4, 64));
    let len = problem.required_len(Tensor::Q).unwrap();
    let plan = engine
        .plan::<f32>(
            &problem,
            ForwardOptions::default().with_kernel(KernelChoice::Naive),
        )
        .unwrap();
    let q = stream.clone_htod(&vec![0.25f32; len]).unwrap();
    let mut out = stream.alloc_zeros::<f32>(len).unwrap();
    let mut workspace = stream.alloc_zeros::<u8>(plan.workspace_bytes()).unwrap();
    stream.synchronize().unwrap();
    engine
        .forward_into(
            &stream,
            &plan,
            DeviceTensors {
                q: &q,
                k: &q,
                v: &q,
                out: &mut out,
                lse: None,
                weights: None,
                workspace: Some(&mut workspace),
                alibi_slopes: None,
                sinks: None,
                cu_seqlens_q: None,
                cu_seqlens_k: None,
                seqused_k: None,
                block_table: None,
                block_row_offsets: None,
                block_col_indices: None,
            },
        )
        .unwrap();
    let done = stream.record_event(None).unwrap();
    assert_eq!(done.try_is_complete(), Ok(false));
    assert_eq!(
        code(unsafe { sys::cuStreamQuery(stream.cu_stream()) }.result()),
        CUresult::CUDA_ERROR_NOT_READY
    );
    done.synchronize().unwrap();
    assert_eq!(done.try_is_complete(), Ok(true));
    assert_eq!(
        code(unsafe { sys::cuStreamQuery(stream.cu_stream()) }.result()),
        CUresult::CUDA_SUCCESS
    );
}
