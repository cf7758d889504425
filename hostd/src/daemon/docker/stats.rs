//! `docker stats`: a container's usage sampled by the backend
//! ([`Backend::sample`](crate::backend::Backend::sample)), in the shape the
//! docker CLI computes its percentages from.

use serde_json::{json, Value};

use crate::backend::Sample;
use mkhost_shared::container::Record;

/// The stats JSON of `record` from two samples (`previous` may be empty).
pub fn view(record: &Record, now: &Sample, previous: &Sample) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = |s: &Sample| {
        json!({
            "cpu_usage": { "total_usage": s.cpu_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0 },
            "system_cpu_usage": s.system_ns,
            "online_cpus": cpus,
            "throttling_data": { "periods": 0, "throttled_periods": 0, "throttled_time": 0 },
        })
    };
    json!({
        "read": now.read,
        "preread": if previous.read.is_empty() { "0001-01-01T00:00:00Z" } else { previous.read.as_str() },
        "pids_stats": { "current": now.pids.0, "limit": now.pids.1 },
        "blkio_stats": {},
        "num_procs": 0,
        "cpu_stats": cpu(now),
        "precpu_stats": cpu(previous),
        "memory_stats": {
            "usage": now.memory,
            "limit": now.memory_limit,
            "stats": { "inactive_file": now.inactive_file },
        },
        "name": format!("/{}", record.name),
        "id": record.id,
    })
}
