//! Facts recorded with every result: the commit, the date, the machine, the command line.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use cuda_attention::gpu::DeviceInfo;

use cuda_attention::cli::bench::results::Device;

/// The commit under test: `$ATTN_COMMIT`, else the `COMMIT` file that `scripts/gpu-pack.sh` puts beside
/// the binary, else `git rev-parse --short HEAD` in the current directory (with `+dirty` when tracked
/// files changed), else `unknown`.
pub fn commit() -> String {
    if let Ok(commit) = std::env::var("ATTN_COMMIT") {
        if !commit.trim().is_empty() {
            return commit.trim().to_string();
        }
    }
    let packed = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("COMMIT")))
        .and_then(|file| std::fs::read_to_string(file).ok());
    if let Some(text) = packed {
        let joined: String = text.split_whitespace().collect();
        if !joined.is_empty() {
            return joined;
        }
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash}+dirty")
            } else {
                hash
            }
        }
        _ => "unknown".into(),
    }
}

/// Now, as RFC 3339 in UTC to the second, e.g. `2026-11-28T09:14:03Z`.
pub fn now_utc() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(seconds)
}

/// Seconds since the Unix epoch as RFC 3339 in UTC.
pub fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Gregorian (year, month, day) of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The command line as typed (program name shortened to `attn`).
pub fn command_line() -> String {
    let mut words = vec!["attn".to_string()];
    words.extend(std::env::args().skip(1).map(
        |a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a
            }
        },
    ));
    words.join(" ")
}

/// The GPU as recorded: name, driver (nvidia-smi's version when it answers, and the CUDA version the
/// driver supports), compute capability, memory, SMs.
pub fn gpu_device(info: &DeviceInfo) -> Device {
    let cuda = format!(
        "CUDA {}.{}",
        info.driver_version / 1000,
        (info.driver_version % 1000) / 10
    );
    let smi = Command::new("nvidia-smi")
        .args([
            "--query-gpu=driver_version",
            "--format=csv,noheader",
            "-i",
            &info.ordinal.to_string(),
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty());
    Device {
        kind: "gpu".into(),
        name: info.name.clone(),
        driver: Some(match smi {
            Some(version) => format!("{version} ({cuda})"),
            None => cuda,
        }),
        compute_capability: Some(format!(
            "{}.{}",
            info.compute_capability.0, info.compute_capability.1
        )),
        memory_bytes: Some(info.total_memory as u64),
        processors: Some(u64::from(info.sm_count)),
    }
}

/// The CPU as recorded: model name from /proc/cpuinfo, hardware threads, memory from /proc/meminfo.
pub fn cpu_device() -> Device {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map(|kib| kib * 1024);
    Device {
        kind: "cpu".into(),
        name: model,
        driver: None,
        compute_capability: None,
        memory_bytes: memory,
        processors: std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_548_443), "2026-12-06T09:14:03Z");
    }
}
