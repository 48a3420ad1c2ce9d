//! Which text format `/metrics` answers in. The registry (`prometheus_client`) writes
//! OpenMetrics 1.0: a counter family `x` with its sample `x_total`, and a closing `# EOF`.
//! Served to a scraper that asked for OpenMetrics (Prometheus does, in its `Accept` header) it
//! goes out as is, labelled `application/openmetrics-text`. Everyone else (`curl`, older
//! scrapers, `promtool check metrics`) gets the classic Prometheus text format 0.0.4, where a
//! counter's `# HELP` and `# TYPE` name the sample itself (`x_total`), `# UNIT` does not exist
//! and nothing marks the end: read by the classic parser, OpenMetrics text would lose every
//! counter's type.

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Exposition {
    OpenMetrics,
    Classic,
}

impl Exposition {
    /// The format an `Accept` header asks for: OpenMetrics if it names it with a non-zero
    /// quality, the classic format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        let asks_openmetrics = accept.unwrap_or_default().split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|quality| quality <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        });
        if asks_openmetrics { Exposition::OpenMetrics } else { Exposition::Classic }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Exposition::Classic => CLASSIC_CONTENT_TYPE,
        }
    }

    /// `openmetrics` (the registry's text) in this format.
    pub fn render(self, openmetrics: String) -> String {
        match self {
            Exposition::OpenMetrics => openmetrics,
            Exposition::Classic => to_classic(&openmetrics),
        }
    }
}

/// The classic text format of OpenMetrics `text`: counter families renamed to their `_total`
/// samples in `# HELP` and `# TYPE`, info families to their `_info` samples typed `gauge`
/// (the classic format has no info type; the convention is a gauge of 1), `# UNIT` and `# EOF`
/// left out; samples unchanged.
pub fn to_classic(text: &str) -> String {
    let families_of = |kind: &str| -> Vec<String> {
        let suffix = format!(" {kind}");
        let types = text.lines().filter_map(|line| line.strip_prefix("# TYPE "));
        types.filter_map(|rest| rest.strip_suffix(suffix.as_str()).map(str::to_string)).collect()
    };
    let (counters, infos) = (families_of("counter"), families_of("info"));
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (family, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let is = |families: &[String]| families.iter().any(|known| known == family);
            if is(&counters) {
                Some(format!("{prefix}{family}_total {tail}"))
            } else if is(&infos) {
                let tail = if *prefix == "# TYPE " { "gauge" } else { tail };
                Some(format!("{prefix}{family}_info {tail}"))
            } else {
                None
            }
        });
        match renamed {
            Some(line) => out.push_str(line.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "\
# HELP conclave_term Current Raft term.
# TYPE conclave_term gauge
conclave_term 3
# HELP conclave_leader_changes Leader changes seen by this node.
# TYPE conclave_leader_changes counter
# UNIT conclave_leader_changes changes
conclave_leader_changes_total 2
# HELP conclave_fsync_duration_seconds Time of each fdatasync.
# TYPE conclave_fsync_duration_seconds histogram
conclave_fsync_duration_seconds_sum 0.5
conclave_fsync_duration_seconds_count 4
conclave_fsync_duration_seconds_bucket{le=\"+Inf\"} 4
# HELP conclave_build The version this node runs.
# TYPE conclave_build info
conclave_build_info{version=\"1.2.3\"} 1
# EOF
";

    #[test]
    fn the_classic_format_names_counters_by_their_samples_and_has_no_eof() {
        let classic = to_classic(OPENMETRICS);
        assert!(classic.contains("# HELP conclave_leader_changes_total Leader changes seen"));
        assert!(classic.contains("# TYPE conclave_leader_changes_total counter\n"));
        assert!(classic.contains("conclave_leader_changes_total 2\n"));
        assert!(classic.contains("# TYPE conclave_term gauge\n"), "gauges keep their names");
        assert!(classic.contains("# TYPE conclave_fsync_duration_seconds histogram\n"));
        assert!(classic.contains("# HELP conclave_build_info The version this node runs.\n"));
        assert!(classic.contains("# TYPE conclave_build_info gauge\n"), "no info type: {classic}");
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"), "{classic}");
        let samples = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples(&classic), samples(OPENMETRICS), "every sample kept");
    }

    #[test]
    fn openmetrics_only_when_the_scraper_asks_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Exposition::negotiate(Some(prometheus)), Exposition::OpenMetrics);
        assert_eq!(Exposition::negotiate(None), Exposition::Classic);
        assert_eq!(Exposition::negotiate(Some("*/*")), Exposition::Classic);
        assert_eq!(Exposition::negotiate(Some("text/plain;version=0.0.4")), Exposition::Classic);
        let refused = "application/openmetrics-text; q=0, text/plain";
        assert_eq!(Exposition::negotiate(Some(refused)), Exposition::Classic);
        assert_eq!(Exposition::OpenMetrics.render(OPENMETRICS.into()), OPENMETRICS);
    }
}
