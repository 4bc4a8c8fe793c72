//! Printing figures (`name: value unit`) and the statistics behind them.

use std::time::Duration;

/// Prints one figure.
pub fn figure(name: &str, value: f64, unit: &str) {
    let shown = if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    println!("{name}: {shown} {unit}");
}

/// Prints a comparison: `measured / baseline`, both from this run.
pub fn ratio(name: &str, measured: f64, baseline: f64) {
    if baseline > 0.0 {
        println!("{name}: {:.3} x", measured / baseline);
    }
}

/// Prints a fact that is not a number (machine, configuration).
pub fn note(name: &str, text: &str) {
    println!("{name}: {text}");
}

/// Latency samples.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    us: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.us.push(d.as_secs_f64() * 1e6);
    }

    pub fn extend(&mut self, other: &Samples) {
        self.us.extend_from_slice(&other.us);
    }

    pub fn len(&self) -> usize {
        self.us.len()
    }

    /// The `p`-th percentile (0..=100), in microseconds.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.us.is_empty() {
            return 0.0;
        }
        let mut sorted = self.us.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }

    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }

    pub fn mean(&self) -> f64 {
        if self.us.is_empty() {
            return 0.0;
        }
        self.us.iter().sum::<f64>() / self.us.len() as f64
    }

    /// Prints median, p99 and mean under `name`.
    pub fn print(&self, name: &str) {
        figure(&format!("{name}.p50"), self.median(), "us");
        figure(&format!("{name}.p99"), self.percentile(99.0), "us");
        figure(&format!("{name}.mean"), self.mean(), "us");
    }
}

/// CPU time (user + system) of this process so far.
pub fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    cpu_from_stat(&stat)
}

/// utime + stime from a `/proc/<pid>/stat` line (clock ticks of 10 ms on Linux).
pub fn cpu_from_stat(stat: &str) -> Duration {
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The machine the figures come from.
pub fn machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    note("machine.cpu", &format!("{model}, {cores} cores"));
    figure("machine.memory", mem_gib, "GiB");
    note(
        "machine.loadavg_at_start",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
            .as_str(),
    );
    note(
        "machine.build",
        if cfg!(debug_assertions) {
            "debug (figures are pessimistic: use cargo xtask bench)"
        } else {
            "release"
        },
    );
}
