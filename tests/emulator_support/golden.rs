//! Golden dumps of the probe kernels (kernels/layout_probe.cu, kernels/hopper_probe.cu): the GPU suite's
//! run writes the device's dump to `$GPU_OUT/NAME`, a person commits it as `tests/golden/NAME`, and every
//! CI run then holds the emulator to it value for value.
//!
//! Format: `# comment` lines, then `SECTION INDEX SLOT VALUE` for every dump value in order (INDEX is a
//! lane or a thread, as the probe says).

use std::path::{Path, PathBuf};

/// How a probe names one of its values: `describe(index)` = (section, lane or thread, slot).
pub struct Probe<'a> {
    /// The golden file's name, e.g. `layout_probe.txt`.
    pub file: &'a str,
    /// The kernel source, e.g. `kernels/layout_probe.cu`.
    pub kernel: &'a str,
    /// The test that compares the dump, e.g. `tests/emulator_layouts.rs`.
    pub test: &'a str,
    /// `LANE` or `THREAD`: what the second column counts.
    pub index: &'a str,
    pub describe: fn(usize) -> (String, usize, usize),
}

impl Probe<'_> {
    /// `tests/golden/FILE` in the source tree.
    pub fn golden_path(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(self.file)
    }

    /// The committed GPU dump, or `None` (said on stdout) before a GPU has run the probe.
    pub fn golden(&self) -> Option<Vec<f32>> {
        let path = self.golden_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(parse_dump(&text)),
            Err(_) => {
                println!(
                    "skipped: no golden GPU dump yet ({} is written by the GPU suite)",
                    path.display()
                );
                None
            }
        }
    }

    /// The dump of `values` taken on `device`, in the golden file's format.
    pub fn format(&self, values: &[f32], device: &str) -> String {
        let mut text = format!(
            "# {} on {device}: SECTION {} SLOT VALUE, {} values.\n\
             # Compared with the CPU emulator by {}.\n",
            self.kernel,
            self.index,
            values.len(),
            self.test
        );
        for (index, value) in values.iter().enumerate() {
            let (section, unit, slot) = (self.describe)(index);
            text += &format!("{section} {unit} {slot} {value}\n");
        }
        text
    }

    /// Writes the GPU's dump to `$GPU_OUT/FILE` when GPU_OUT is set (the GPU suite sets it).
    pub fn write_gpu_dump(&self, values: &[f32], device: &str) {
        if let Some(dir) = std::env::var_os("GPU_OUT") {
            let path = Path::new(&dir).join(self.file);
            std::fs::create_dir_all(&dir).expect("cannot create GPU_OUT");
            std::fs::write(&path, self.format(values, device)).expect("cannot write the dump");
            println!("wrote {}", path.display());
        }
    }
}

/// The values of a dump in the golden format, in order.
pub fn parse_dump(text: &str) -> Vec<f32> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            line.split_whitespace()
                .nth(3)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad golden line: {line}"))
        })
        .collect()
}

/// A probe kernel of the embedded fatbin on device 0, with its context and the device's name; `None`
/// without GPU kernels in the build, a driver, a device, or (with `major`) a device of that compute
/// capability major.
pub fn gpu_function(
    name: &str,
    major: Option<i32>,
) -> Result<
    Option<(
        std::sync::Arc<cudarc::driver::CudaContext>,
        cudarc::driver::CudaFunction,
        String,
    )>,
    String,
> {
    use cudarc::driver::CudaContext;
    use cudarc::nvrtc::Ptx;

    if !cuda_attention::gpu::build_info::KERNELS_BUILT || !cuda_attention::gpu::driver_present() {
        return Ok(None);
    }
    if cuda_attention::gpu::device_count().unwrap_or(0) == 0 {
        return Ok(None);
    }
    let ctx = CudaContext::new(0).map_err(|e| e.to_string())?;
    if let Some(major) = major {
        if ctx.compute_capability().map_err(|e| e.to_string())?.0 != major {
            return Ok(None);
        }
    }
    let device = ctx.name().unwrap_or_else(|_| "a CUDA device".into());
    let module = ctx
        .load_module(Ptx::from_binary(
            cuda_attention::gpu::build_info::FATBIN.to_vec(),
        ))
        .map_err(|e| e.to_string())?;
    let function = module.load_function(name).map_err(|e| e.to_string())?;
    Ok(Some((ctx, function, device)))
}
