//! The crate's one error type. Every message says what was wrong and what to do next.

use cudarc::driver::DriverError;

/// Result alias used across the crate.
pub type Result<T, E = AttentionError> = std::result::Result<T, E>;

/// Everything that can go wrong between a caller and a kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttentionError {
    /// A dimension that must be at least 1 is 0.
    #[error("{name} is 0: every dimension except seq_k must be at least 1 (seq_k = 0 gives zero outputs)")]
    EmptyDimension {
        /// Which dimension.
        name: &'static str,
    },

    /// The head dimension is outside what any kernel supports.
    #[error("head_dim {head_dim} is not supported: use a head dimension from 1 to {max}")]
    HeadDimUnsupported {
        /// Requested head dimension.
        head_dim: usize,
        /// Largest supported head dimension.
        max: usize,
    },

    /// heads_q is not a multiple of heads_kv (GQA/MQA needs whole groups).
    #[error(
        "heads_q ({heads_q}) is not a multiple of heads_kv ({heads_kv}): each key/value head must serve \
         the same number of query heads (MQA: heads_kv = 1; MHA: heads_kv = heads_q)"
    )]
    HeadsNotMultiple {
        /// Query heads.
        heads_q: usize,
        /// Key/value heads.
        heads_kv: usize,
    },

    /// A size or offset does not fit the integer types the kernels use.
    #[error("{what} overflows ({detail}): split the batch or shorten the sequence")]
    SizeOverflow {
        /// What overflowed.
        what: &'static str,
        /// The numbers involved.
        detail: String,
    },

    /// A tensor's strides cannot describe a valid layout.
    #[error("invalid strides for {tensor}: {detail}")]
    InvalidStrides {
        /// Which tensor (q, k, v, out).
        tensor: &'static str,
        /// What is wrong and what would be right.
        detail: String,
    },

    /// A buffer is shorter than its shape and strides need.
    #[error(
        "buffer {tensor} holds {len} elements but its shape and strides reach {needed}: pass a larger \
         buffer or fix the strides"
    )]
    BufferTooSmall {
        /// Which buffer.
        tensor: &'static str,
        /// Elements needed.
        needed: usize,
        /// Elements given.
        len: usize,
    },

    /// A ragged batch's metadata (cu_seqlens, seqused_k, block table) breaks a rule of its problem
    /// (reported by [`crate::validate_metadata`]).
    #[error("invalid metadata: {buffer}[{index}] = {value}: {rule}")]
    InvalidMetadata {
        /// Which buffer.
        buffer: &'static str,
        /// The first bad entry.
        index: usize,
        /// Its value.
        value: i64,
        /// The rule it breaks, and the bound involved.
        rule: String,
    },

    /// The softmax scale is not a finite number.
    #[error("scale {scale} is not finite: pass a finite softmax scale (default 1/sqrt(head_dim))")]
    InvalidScale {
        /// The scale given.
        scale: f32,
    },

    /// The requested kernel cannot run this problem on this device.
    #[error("the {kernel} kernel cannot run this problem: {reason}")]
    KernelUnsupported {
        /// Kernel family asked for.
        kernel: &'static str,
        /// Why not, and what to use instead.
        reason: String,
    },

    /// The crate was built without nvcc, so there are no GPU kernels in it.
    #[error(
        "kernels not built: install a CUDA toolkit or run scripts/install-cuda-toolchain.sh, then rebuild \
         (cargo clean -p cuda-attention && cargo build)"
    )]
    KernelsNotBuilt,

    /// libcuda (the NVIDIA driver library) could not be loaded.
    #[error(
        "no NVIDIA driver: libcuda.so could not be loaded. Install the NVIDIA driver, or use the CPU backend \
         (cuda_attention::cpu) on this machine"
    )]
    DriverNotFound,

    /// The driver is present but the requested device does not exist.
    #[error("no CUDA device with ordinal {ordinal} ({count} found): pick an ordinal below {count}, or use the CPU backend")]
    NoDevice {
        /// Requested ordinal.
        ordinal: usize,
        /// Devices the driver reports.
        count: usize,
    },

    /// Not enough free memory (device, or host for the CPU paths) for the buffers this call needs.
    #[error(
        "not enough {memory} memory for {what}: needs {needed} bytes, {free} free. Use the flash kernel, \
         a shorter sequence or a smaller batch"
    )]
    OutOfMemory {
        /// Which memory: device or host.
        memory: Memory,
        /// What the memory was for.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes free (device), or available to this process (host).
        free: usize,
    },

    /// A caller-owned buffer was passed that this plan does not allow, or one it needs is missing.
    #[error("{0}")]
    InvalidArgument(String),

    /// An attention-map request ([`crate::attention_map::MapSpec`]) that cannot be computed.
    #[error("invalid attention map: {detail}")]
    InvalidMapSpec {
        /// What was wrong and what to pass instead.
        detail: String,
    },

    /// The CPU emulator stopped a kernel that broke a rule of the CUDA execution model (a barrier not
    /// every thread reaches, a divergent warp collective, a misaligned ldmatrix row, a deadlock, ...).
    #[error(
        "the emulator stopped kernel {kernel}: {message}. This is a bug in the kernel at that call site \
         (see docs/emulator.md for what each check means)"
    )]
    Emulation {
        /// Exported name of the kernel.
        kernel: String,
        /// What the emulator found and where: block, thread and file:line.
        message: String,
    },

    /// A CUDA driver call failed.
    #[error("CUDA driver error while {context}: {source}. Check the device with `attn info`")]
    Driver {
        /// What the crate was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
}

/// Which memory an [`AttentionError::OutOfMemory`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Memory {
    /// GPU memory.
    Device,
    /// Host memory (CPU backend, reference, emulator, CLI buffers).
    Host,
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Memory::Device => "device",
            Memory::Host => "host",
        })
    }
}

/// Attaches a context string to a driver error.
pub(crate) trait DriverContext<T> {
    fn context(self, context: &'static str) -> Result<T>;
}

impl<T> DriverContext<T> for std::result::Result<T, DriverError> {
    fn context(self, context: &'static str) -> Result<T> {
        self.map_err(|source| AttentionError::Driver { context, source })
    }
}
