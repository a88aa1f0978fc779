//! The two Prometheus exposition formats, from one rendering. Metrics are rendered once in
//! OpenMetrics 1.0 (what the `prometheus-client` crate writes); a scraper that asks for it
//! (`Accept: application/openmetrics-text`, as Prometheus does) gets that, anyone else the
//! classic text format 0.0.4, converted line by line — each served with its own content type,
//! so every parser reads counters as counters. Process metrics (CPU, memory, descriptors,
//! start time, from /proc) are added to both.

/// Content type of OpenMetrics 1.0 text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// True when an `Accept` header asks for OpenMetrics text.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let mut fields = part.split(';').map(str::trim);
        let ty = fields.next().unwrap_or_default();
        let q = fields
            .find_map(|f| f.strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        ty.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
    })
}

/// `om` (OpenMetrics text, `# EOF` last) with `extra` (more OpenMetrics families) added
/// before its end.
pub fn with_families(om: &str, extra: &str) -> String {
    let body = om.strip_suffix("# EOF\n").unwrap_or(om);
    format!("{body}{extra}# EOF\n")
}

/// OpenMetrics text as the classic text format 0.0.4: a counter's `# TYPE`/`# HELP` name the
/// `_total` sample the format expects, `_created` samples and `# UNIT` lines (which it does
/// not have) are dropped, `info` families become `_info` gauges and `stateset` ones gauges,
/// `# EOF` goes. Escapes
/// in help texts and label values are the same in both.
pub fn to_text_004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // `# HELP` comes before `# TYPE`: the types first.
    let typed = |ty: &str| -> Vec<String> {
        om.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|r| r.split_once(' '))
            .filter(|(_, t)| *t == ty)
            .map(|(n, _)| n.to_string())
            .collect()
    };
    let counters = typed("counter");
    let infos = typed("info");
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            match ty {
                "counter" => out.push_str(&format!("# TYPE {name}_total counter\n")),
                "info" => out.push_str(&format!("# TYPE {name}_info gauge\n")),
                "stateset" => out.push_str(&format!("# TYPE {name} gauge\n")),
                "gaugehistogram" => out.push_str(&format!("# TYPE {name} histogram\n")),
                "unknown" => out.push_str(&format!("# TYPE {name} untyped\n")),
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.iter().any(|c| c == name) {
                out.push_str(&format!("# HELP {name}_total {help}\n"));
            } else if infos.iter().any(|c| c == name) {
                out.push_str(&format!("# HELP {name}_info {help}\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if name.ends_with("_created")
            && counters
                .iter()
                .any(|c| name.strip_suffix("_created") == Some(c.as_str()))
        {
            continue;
        }
        // Exemplars (` # {…} v`) and timestamps in seconds are OpenMetrics-only: keep the
        // sample and its value.
        let sample = match line.find(" # ") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// The process's own metrics (the names every Prometheus client library uses), as OpenMetrics
/// families; empty where /proc cannot be read.
pub fn process_families() -> String {
    let mut out = String::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return out;
    };
    // The command name (field 2) is in parentheses and may hold spaces: fields after it.
    let Some(after) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return out;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    // f[0] is field 3 (state): field N is f[N - 3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let family = |out: &mut String, name: &str, ty: &str, help: &str, sample: &str, v: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {ty}\n{sample} {v}\n"
        ));
    };
    if let (Some(user), Some(system)) = (field(14), field(15)) {
        family(
            &mut out,
            "process_cpu_seconds",
            "counter",
            "Total user and system CPU time spent in seconds.",
            "process_cpu_seconds_total",
            (user + system) / ticks,
        );
    }
    if let Some(vsize) = field(23) {
        family(
            &mut out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            "process_virtual_memory_bytes",
            vsize,
        );
    }
    if let Some(rss) = field(24) {
        family(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            "process_resident_memory_bytes",
            rss * page,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        family(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            "process_start_time_seconds",
            boot + start / ticks,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        family(
            &mut out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            "process_open_fds",
            fds.count() as f64,
        );
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        family(
            &mut out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            "process_max_fds",
            limit.rlim_cur as f64,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_name_their_total_sample_in_the_classic_format() {
        let om = "# HELP dispatch_events_committed Agent events.\n# TYPE dispatch_events_committed counter\ndispatch_events_committed_total 3\ndispatch_events_committed_created 1.7e9\n# HELP x_seconds A histogram.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\nx_seconds_bucket{le=\"1.0\"} 2 # {trace_id=\"a\"} 0.5\nx_seconds_sum 1.0\nx_seconds_count 2\n# HELP b Build.\n# TYPE b info\nb_info{version=\"1\"} 1\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP dispatch_events_committed_total Agent events.\n# TYPE dispatch_events_committed_total counter\ndispatch_events_committed_total 3\n# HELP x_seconds A histogram.\n# TYPE x_seconds histogram\nx_seconds_bucket{le=\"1.0\"} 2\nx_seconds_sum 1.0\nx_seconds_count 2\n# HELP b_info Build.\n# TYPE b_info gauge\nb_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    fn openmetrics_is_served_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(prometheus));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }

    #[test]
    fn process_families_read_this_process() {
        let p = process_families();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(p.contains(name), "{name} missing:\n{p}");
        }
        let added = with_families("# TYPE a gauge\na 1\n# EOF\n", &p);
        assert!(added.ends_with("# EOF\n") && added.matches("# EOF").count() == 1);
    }
}
