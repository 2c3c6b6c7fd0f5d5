//! Guest resource use, read from /proc.

use hearth_guest_proto::msg::GuestMetrics;

pub fn sample() -> GuestMetrics {
    let mut m = GuestMetrics::default();
    if let Ok(s) = std::fs::read_to_string("/proc/uptime") {
        m.uptime_s = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
    }
    if let Ok(s) = std::fs::read_to_string("/proc/stat") {
        if let Some(cpu) = s.lines().find(|l| l.starts_with("cpu ")) {
            let v: Vec<u64> = cpu
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            m.cpu_total_ticks = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            m.cpu_busy_ticks = m.cpu_total_ticks.saturating_sub(idle);
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/meminfo") {
        let get = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        m.memory_total_kib = get("MemTotal:");
        m.memory_available_kib = get("MemAvailable:");
    }
    if let Ok(s) = std::fs::read_to_string("/proc/loadavg") {
        let v: Vec<&str> = s.split_whitespace().collect();
        m.load1 = v.first().and_then(|x| x.parse().ok()).unwrap_or(0.0);
        m.load5 = v.get(1).and_then(|x| x.parse().ok()).unwrap_or(0.0);
        m.load15 = v.get(2).and_then(|x| x.parse().ok()).unwrap_or(0.0);
        m.processes = v
            .get(3)
            .and_then(|x| x.split('/').nth(1))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
    }
    if let Ok(st) = nix::sys::statvfs::statvfs("/") {
        let frag = st.fragment_size();
        m.disk_total_kib = st.blocks() * frag / 1024;
        m.disk_used_kib = (st.blocks() - st.blocks_free()) * frag / 1024;
    }
    m
}
