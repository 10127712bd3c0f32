//! The Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` before each
//! family, one sample a line, label values escaped, histograms as cumulative `_bucket{le}` lines
//! ending in `+Inf`, then `_sum` and `_count`.
//!
//! Only what voicebot1 needs: the families and their labels are fixed in code, so names are
//! checked in debug builds rather than at run time.

use std::fmt::{self, Write};

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        })
    }
}

/// A histogram as read at one moment: per-bucket (not cumulative) counts, the last one for
/// observations above every bound.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot<'b> {
    pub bounds: &'b [f64],
    /// `bounds.len() + 1` counts: `counts[i]` observations were `<= bounds[i]` and above the
    /// bound before; the last, above every bound.
    pub counts: Vec<u64>,
    /// Sum of all observations, in the histogram's unit (seconds here).
    pub sum: f64,
}

impl HistogramSnapshot<'_> {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Builds one exposition text.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            out: String::with_capacity(16 * 1024),
        }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line: `name{label="value",…} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// The lines of one histogram (the family must have been started with `Kind::Histogram`).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        debug_assert_eq!(
            h.counts.len(),
            h.bounds.len() + 1,
            "{name}: one count per bucket plus +Inf"
        );
        let mut cumulative = 0u64;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = h
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| format_float(*b));
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        self.sample(&format!("{name}_sum"), labels, format_float(h.sum));
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            debug_assert!(valid_name(k) && !k.contains(':'), "bad label name {k:?}");
            if !first {
                self.out.push(',');
            }
            first = false;
            let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
        }
        self.out.push('}');
    }
}

/// A float as Prometheus reads it: `+Inf`/`-Inf`/`NaN` spelled its way; integral values without
/// a fraction (`1`, not `1.0`), others in Rust's shortest round-trip form (`0.0025`).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_family_has_help_type_and_labelled_samples() {
        let mut w = Writer::new();
        w.family(
            "voicebot1_x_total",
            Kind::Counter,
            "Things.\nCounted with a \\ in them.",
        );
        w.sample(
            "voicebot1_x_total",
            &[("outcome", "a"), ("class", "2xx")],
            3,
        );
        w.sample("voicebot1_x_total", &[], 0);
        assert_eq!(
            w.finish(),
            "# HELP voicebot1_x_total Things.\\nCounted with a \\\\ in them.\n\
             # TYPE voicebot1_x_total counter\n\
             voicebot1_x_total{outcome=\"a\",class=\"2xx\"} 3\n\
             voicebot1_x_total 0\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut w = Writer::new();
        w.sample("m", &[("v", "a\"b\\c\nd")], 1);
        assert_eq!(w.finish(), "m{v=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_with_inf_sum_and_count() {
        let mut w = Writer::new();
        w.family("voicebot1_h_seconds", Kind::Histogram, "Latency.");
        let h = HistogramSnapshot {
            bounds: &[0.005, 0.1, 1.0],
            counts: vec![2, 0, 1, 4],
            sum: 12.25,
        };
        w.histogram("voicebot1_h_seconds", &[("operation", "play")], &h);
        assert_eq!(
            w.finish(),
            "# HELP voicebot1_h_seconds Latency.\n\
             # TYPE voicebot1_h_seconds histogram\n\
             voicebot1_h_seconds_bucket{operation=\"play\",le=\"0.005\"} 2\n\
             voicebot1_h_seconds_bucket{operation=\"play\",le=\"0.1\"} 2\n\
             voicebot1_h_seconds_bucket{operation=\"play\",le=\"1\"} 3\n\
             voicebot1_h_seconds_bucket{operation=\"play\",le=\"+Inf\"} 7\n\
             voicebot1_h_seconds_sum{operation=\"play\"} 12.25\n\
             voicebot1_h_seconds_count{operation=\"play\"} 7\n"
        );
        assert_eq!(h.count(), 7);
    }

    #[test]
    fn floats_are_written_as_prometheus_reads_them() {
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.0025), "0.0025");
        assert_eq!(format_float(2.5), "2.5");
        assert_eq!(format_float(0.0), "0");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }

    #[test]
    fn metric_names_follow_the_prometheus_grammar() {
        assert!(valid_name("voicebot1_calls_total"));
        assert!(valid_name("a:b_c"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
