//! The standard `process_*` metrics every Prometheus exporter has (CPU time, resident memory,
//! open and maximum file descriptors, start time), read from `/proc/self` at each scrape with
//! the `procfs` crate. On a system without `/proc` they are simply absent.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The metrics, registered without the `conclave_` prefix, as the convention names them.
#[derive(Default)]
pub struct ProcessMetrics {
    cpu_seconds: Counter<f64>,
    resident_memory_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time_seconds: Gauge,
}

impl ProcessMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let process = registry.sub_registry_with_prefix("process");
        process.register(
            "cpu_seconds",
            "Total user and system CPU time spent in seconds",
            self.cpu_seconds.clone(),
        );
        process.register(
            "resident_memory_bytes",
            "Resident memory size in bytes",
            self.resident_memory_bytes.clone(),
        );
        process.register("open_fds", "Number of open file descriptors", self.open_fds.clone());
        process.register(
            "max_fds",
            "Maximum number of open file descriptors",
            self.max_fds.clone(),
        );
        process.register(
            "start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            self.start_time_seconds.clone(),
        );
    }

    /// Reads the process's figures in (the counter moves up to the kernel's CPU time).
    pub fn refresh(&self) {
        let Ok(me) = procfs::process::Process::myself() else { return };
        let ticks_per_second = procfs::ticks_per_second() as f64;
        if let Ok(stat) = me.stat() {
            let cpu_seconds = (stat.utime + stat.stime) as f64 / ticks_per_second;
            let counted = self.cpu_seconds.get();
            if cpu_seconds > counted {
                self.cpu_seconds.inc_by(cpu_seconds - counted);
            }
            self.resident_memory_bytes.set((stat.rss * procfs::page_size()) as i64);
            if let Ok(boot_seconds) = procfs::boot_time_secs() {
                let started = boot_seconds as f64 + stat.starttime as f64 / ticks_per_second;
                self.start_time_seconds.set(started as i64);
            }
        }
        if let Ok(open) = me.fd_count() {
            self.open_fds.set(open as i64);
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            self.max_fds.set(max as i64);
        }
    }
}
