//! A self-contained HTML timeline of a history and its verdict: one lane per client, one bar
//! per operation, the minimal failing operations highlighted. Inline CSS, SVG and a few lines of
//! JavaScript; no network access, so it opens from a CI artifact or an email attachment.
//!
//! The time axis is ordinal: every distinct call or return time gets the same width. Only the
//! order of events matters to linearizability, and real runs mix microsecond bursts with
//! second-long stalls that a linear axis would render unreadable. Hovering a bar shows its real
//! times.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::check::{CheckReport, Verdict};
use crate::explain::{describe_indexed, describe_op};
use crate::history::{History, Op, OpIndex, Status, Time};
use crate::partition::touches;

/// Bars drawn at most; beyond this a browser struggles and a person cannot read it anyway.
pub(crate) const BARS_MAX: usize = 2_000;
const LANE_HEIGHT_PX: usize = 30;
const BAR_HEIGHT_PX: usize = 20;
const LABEL_WIDTH_PX: usize = 90;
const TOP_PX: usize = 24;
/// Target drawing width; each distinct time gets between the two step bounds.
const WIDTH_TARGET_PX: usize = 2_400;
const STEP_MIN_PX: usize = 8;
const STEP_MAX_PX: usize = 48;
/// How far past the last time an unknown-outcome bar extends (it may take effect "later").
const OPEN_TAIL_PX: usize = 40;

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn kind_class(op: &Op) -> &'static str {
    match op {
        Op::Get { .. } | Op::Range(_) => "read",
        Op::Put { .. } | Op::Delete { .. } => "write",
        Op::Cas { .. } | Op::PutIfAbsent { .. } => "cas",
        Op::Txn(_) => "txn",
    }
}

/// Which operations to draw: for a violation, those touching the failing keys, nearest the
/// failing operations first; otherwise the earliest ones.
fn select(history: &History, report: &CheckReport) -> (Vec<OpIndex>, bool) {
    let ops = history.ops();
    let Verdict::Violation(violation) = &report.verdict else {
        let mut all: Vec<OpIndex> = (0..ops.len()).collect();
        all.sort_by_key(|&index| (ops[index].call, index));
        let truncated = all.len() > BARS_MAX;
        all.truncate(BARS_MAX);
        return (all, truncated);
    };
    let keys: BTreeSet<&str> = violation.keys.iter().map(String::as_str).collect();
    let mut candidates: Vec<OpIndex> =
        (0..ops.len()).filter(|&index| keys.is_empty() || touches(&ops[index].op, &keys)).collect();
    let failing: BTreeSet<OpIndex> = violation.failing_ops.iter().copied().collect();
    let truncated = candidates.len() > BARS_MAX;
    if truncated {
        let window_start = failing.iter().map(|&index| ops[index].call).min().unwrap_or(0);
        let window_end = failing
            .iter()
            .map(|&index| ops[index].ret.unwrap_or(ops[index].call))
            .max()
            .unwrap_or(0);
        let distance = |index: OpIndex| -> Time {
            let operation = &ops[index];
            let end = operation.ret.unwrap_or(Time::MAX);
            if failing.contains(&index) || (operation.call <= window_end && end >= window_start) {
                0
            } else if end < window_start {
                window_start - end
            } else {
                operation.call - window_end
            }
        };
        candidates.sort_by_key(|&index| (distance(index), !failing.contains(&index), index));
        candidates.truncate(BARS_MAX);
    }
    candidates.sort_by_key(|&index| (ops[index].call, index));
    (candidates, truncated)
}

/// Renders the timeline page.
pub fn render_timeline_html(history: &History, report: &CheckReport) -> String {
    let ops = history.ops();
    let (selected, truncated) = select(history, report);
    let violation = report.violation();
    let failing: BTreeSet<OpIndex> = violation
        .map(|violation| violation.failing_ops.iter().copied().collect())
        .unwrap_or_default();
    let order: BTreeMap<OpIndex, usize> = violation
        .map(|violation| {
            violation
                .longest_prefix
                .iter()
                .enumerate()
                .map(|(rank, &index)| (index, rank + 1))
                .collect()
        })
        .unwrap_or_default();

    // Ordinal time axis.
    let times: BTreeSet<Time> = selected
        .iter()
        .flat_map(|&index| [Some(ops[index].call), ops[index].ret])
        .flatten()
        .collect();
    let rank: BTreeMap<Time, usize> =
        times.iter().enumerate().map(|(rank, &time)| (time, rank)).collect();
    let step_px = (WIDTH_TARGET_PX / times.len().max(1)).clamp(STEP_MIN_PX, STEP_MAX_PX);
    let x_of = |time: Time| LABEL_WIDTH_PX + rank.get(&time).copied().unwrap_or(0) * step_px;
    let axis_end_px = LABEL_WIDTH_PX + times.len().max(1) * step_px;
    let clients: BTreeSet<u64> = selected.iter().map(|&index| ops[index].client).collect();
    let lane: BTreeMap<u64, usize> =
        clients.iter().enumerate().map(|(lane, &client)| (client, lane)).collect();
    let width_px = axis_end_px + OPEN_TAIL_PX + 20;
    let height_px = TOP_PX + clients.len().max(1) * LANE_HEIGHT_PX + 10;

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width_px}\" height=\"{height_px}\">"
    );
    for (&client, &lane_index) in &lane {
        let y = TOP_PX + lane_index * LANE_HEIGHT_PX;
        let _ = write!(
            svg,
            "<rect class=\"lane\" x=\"0\" y=\"{y}\" width=\"{width_px}\" height=\"{LANE_HEIGHT_PX}\"/>\
             <text class=\"lane-label\" x=\"6\" y=\"{}\">client {client}</text>",
            y + LANE_HEIGHT_PX / 2 + 4
        );
    }
    for &index in &selected {
        let operation = &ops[index];
        let y = TOP_PX
            + lane[&operation.client] * LANE_HEIGHT_PX
            + (LANE_HEIGHT_PX - BAR_HEIGHT_PX) / 2;
        let x_start = x_of(operation.call);
        let open = operation.ret.is_none();
        let x_end = match operation.ret {
            Some(ret) => x_of(ret) + step_px / 2,
            None => axis_end_px + OPEN_TAIL_PX,
        };
        let width = (x_end - x_start).max(4);
        let mut classes = format!("op {}", kind_class(&operation.op));
        match operation.status {
            Status::Ok => {}
            Status::Fail => classes.push_str(" fail"),
            Status::Info => classes.push_str(" info"),
        }
        if open {
            classes.push_str(" open");
        }
        if failing.contains(&index) {
            classes.push_str(" failing");
        }
        let label = describe_op(&operation.op, operation.status);
        let fits = width.saturating_sub(6) / 7;
        let short: String = if label.chars().count() > fits {
            label.chars().take(fits.saturating_sub(1)).chain(['…']).collect()
        } else {
            label.clone()
        };
        let description = describe_indexed(history, index);
        let _ = write!(
            svg,
            "<g class=\"{classes}\" data-op=\"{index}\" data-desc=\"{}\">\
             <title>{}</title>\
             <rect x=\"{x_start}\" y=\"{y}\" width=\"{width}\" height=\"{BAR_HEIGHT_PX}\" rx=\"3\"/>",
            escape(&description),
            escape(&description)
        );
        if fits > 1 {
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\">{}</text>",
                x_start + 4,
                y + 14,
                escape(&short)
            );
        }
        if let Some(rank) = order.get(&index) {
            let _ = write!(
                svg,
                "<circle class=\"badge\" cx=\"{x_start}\" cy=\"{y}\" r=\"8\"/>\
                 <text class=\"badge-text\" x=\"{x_start}\" y=\"{}\">{rank}</text>",
                y + 4
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");

    let mut page = String::new();
    let title = match &report.verdict {
        Verdict::Linearizable => "linearizable".to_owned(),
        Verdict::Violation(violation) => format!("violation on {}", violation.keys.join(", ")),
        Verdict::Unknown(unknown) => format!("unknown ({})", unknown.reason.as_str()),
    };
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>conclave-checker: {}</title><style>{STYLE}</style></head><body>\
         <h1 class=\"verdict-{}\">{}</h1><p class=\"meta\">{} operations, {} partitions, {} search \
         steps. Time runs left to right in event order (equal widths per distinct time; hover a \
         bar for its real times). Dashed bars: unknown outcome (info); grey: failed.</p>",
        escape(&title),
        report.verdict.as_str(),
        escape(&title),
        report.op_count,
        report.partitions.len(),
        report.steps
    );
    if let Some(violation) = violation {
        let _ = write!(
            page,
            "<h2>{} failing operations</h2><p class=\"meta\">{}</p>\
             <table><tr><th>#</th><th>where</th><th>operation</th></tr>",
            if violation.minimal { "Minimal set of" } else { "Set of" },
            if violation.minimal {
                "No order of these respects both their real-time order and the KV semantics, \
                 whatever the other operations did (each may have taken effect anywhere within \
                 its own interval, or not at all); without any one of them, some order would. \
                 The numbers give the longest valid order found: after it, none of the rest can \
                 take effect."
            } else {
                "No order of these respects both their real-time order and the KV semantics. \
                 The set was not minimized further (disabled, or the budget ran out), so a \
                 smaller one may exist."
            },
        );
        for &index in &violation.failing_ops {
            let rank = order.get(&index).map_or("×".to_owned(), usize::to_string);
            let _ = write!(
                page,
                "<tr data-op=\"{index}\"><td>{rank}</td><td>{}</td><td>{}</td></tr>",
                escape(&history.location(index).to_string()),
                escape(&describe_indexed(history, index))
            );
        }
        page.push_str("</table>");
    }
    if truncated {
        let _ = write!(
            page,
            "<p class=\"meta\">Showing {} of the relevant operations (the ones nearest the \
             failing set).</p>",
            selected.len()
        );
    }
    let _ = writeln!(
        page,
        "<div class=\"legend\"><span class=\"sw read\"></span>read <span class=\"sw write\"></span>write \
         <span class=\"sw cas\"></span>cas / put_if_absent <span class=\"sw txn\"></span>txn \
         <span class=\"sw failing-sw\"></span>in the failing set</div>\
         <div class=\"scroll\">{svg}</div><pre id=\"details\">Click a bar for details.</pre>\
         <script>{SCRIPT}</script></body></html>"
    );
    page
}

const STYLE: &str = "
body{font:14px system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:20px;margin:0 0 4px}
h1.verdict-violation{color:#b00020}h1.verdict-linearizable{color:#1b7f3b}h1.verdict-unknown{color:#9a6700}
h2{font-size:16px;margin:16px 0 4px}
.meta{color:#555;margin:4px 0}
table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:left;font-family:ui-monospace,monospace;font-size:12px}
tr[data-op]{cursor:pointer}
tr.hover{background:#ffe9a8}
.scroll{overflow:auto;border:1px solid #ccc;max-height:75vh;margin-top:8px}
.lane{fill:#fafafa;stroke:#eee}
.lane-label{font-size:12px;fill:#555}
.op rect{stroke:#0003;stroke-width:1}
.op text{font:11px ui-monospace,monospace;fill:#111;pointer-events:none}
.read rect{fill:#9cc9f5}.write rect{fill:#9ee0a8}.cas rect{fill:#f7c58b}.txn rect{fill:#cfb3f0}
.fail rect{fill:#ddd;opacity:.7}
.open rect{stroke-dasharray:4 3;stroke:#333;fill-opacity:.45}
.failing rect{stroke:#d00020;stroke-width:3}
.op.hover rect{stroke:#000;stroke-width:3}
.op{cursor:pointer}
.badge{fill:#d00020}.badge-text{fill:#fff!important;font:bold 10px sans-serif!important;text-anchor:middle}
.legend{margin:8px 0;font-size:12px}
.sw{display:inline-block;width:14px;height:10px;border:1px solid #0003;margin:0 4px 0 10px;vertical-align:middle}
.sw.read{background:#9cc9f5}.sw.write{background:#9ee0a8}.sw.cas{background:#f7c58b}.sw.txn{background:#cfb3f0}
.sw.failing-sw{border:3px solid #d00020}
#details{background:#f4f4f4;padding:8px;white-space:pre-wrap}
";

const SCRIPT: &str = "
function mark(id, on) {
  document.querySelectorAll('[data-op=\"' + id + '\"]').forEach(function (el) {
    el.classList.toggle('hover', on);
  });
}
document.querySelectorAll('[data-op]').forEach(function (el) {
  el.addEventListener('mouseenter', function () { mark(el.dataset.op, true); });
  el.addEventListener('mouseleave', function () { mark(el.dataset.op, false); });
  el.addEventListener('click', function () {
    var bar = document.querySelector('g[data-op=\"' + el.dataset.op + '\"]');
    if (!bar) { return; }
    document.getElementById('details').textContent = bar.dataset.desc;
    if (el !== bar) { bar.scrollIntoView({block: 'center', inline: 'center'}); }
  });
});
";
