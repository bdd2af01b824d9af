//! The ptxas resource report of this build, parsed: registers, spills and stack per kernel and
//! architecture. Tests hold every kernel to no spills and no stack frame.

use super::build_info::PTXAS_REPORT;

/// ptxas's figures for one kernel compiled for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelResources {
    /// Exported kernel name.
    pub kernel: String,
    /// Target, e.g. `sm_80` or `sm_90a`.
    pub arch: String,
    /// Registers per thread.
    pub registers: u32,
    /// Stack frame bytes per thread.
    pub stack_bytes: u32,
    /// Spill store bytes.
    pub spill_store_bytes: u32,
    /// Spill load bytes.
    pub spill_load_bytes: u32,
}

/// Every (kernel, architecture) entry of this build's report (empty without nvcc).
pub fn kernel_resources() -> Vec<KernelResources> {
    parse_ptxas_report(PTXAS_REPORT)
}

/// Parses the output of `nvcc -Xptxas -v`.
pub fn parse_ptxas_report(report: &str) -> Vec<KernelResources> {
    let mut entries = Vec::new();
    let mut current: Option<KernelResources> = None;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            if let Some(done) = current.take() {
                entries.push(done);
            }
            let mut parts = rest.split('\'');
            let kernel = parts.next().unwrap_or_default().to_string();
            let arch = parts.nth(1).unwrap_or_default().to_string();
            current = Some(KernelResources {
                kernel,
                arch,
                registers: 0,
                stack_bytes: 0,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
            });
        } else if let Some(entry) = current.as_mut() {
            if line.contains("bytes stack frame") {
                entry.stack_bytes = number_before(line, "bytes stack frame");
                entry.spill_store_bytes = number_before(line, "bytes spill stores");
                entry.spill_load_bytes = number_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                entry.registers = number_before(line, "registers");
            }
        }
    }
    entries.extend(current);
    entries
}

/// The integer right before `label` in `line` (0 when absent).
fn number_before(line: &str, label: &str) -> u32 {
    line.split(label)
        .next()
        .and_then(|head| {
            head.split(|c: char| !c.is_ascii_digit())
                .rfind(|s| !s.is_empty())
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report_entry() {
        let report = "ptxas info    : Compiling entry function 'naive_pv_f16' for 'sm_90a'\n\
                      ptxas info    : Function properties for naive_pv_f16\n\
                      \x20   8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n\
                      ptxas info    : Used 48 registers, used 1 barriers, 536 bytes cmem[0]\n";
        assert_eq!(
            parse_ptxas_report(report),
            vec![KernelResources {
                kernel: "naive_pv_f16".into(),
                arch: "sm_90a".into(),
                registers: 48,
                stack_bytes: 8,
                spill_store_bytes: 12,
                spill_load_bytes: 16,
            }]
        );
    }
}
