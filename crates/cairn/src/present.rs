//! How the CLI shows things to people: tables, sizes, times and progress.
//! (Programs get `--json`, which none of this touches.)

use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::{CellAlignment, Table, presets};
use indicatif::{ProgressBar, ProgressStyle};

/// A table with `headers`; columns whose header is in `right` align right.
pub fn table(headers: &[&str], right: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(headers.to_vec());
    for (i, h) in headers.iter().enumerate() {
        if right.contains(h) {
            if let Some(c) = t.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    t
}

/// `1.5 MiB`, `320 B`.
pub fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

/// A moment given in Unix milliseconds, in UTC to the second, and how
/// long ago: `2026-11-28 16:56:42 UTC (3m ago)`.
pub fn when(unix_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms);
    let stamp = time::OffsetDateTime::from(at)
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_else(|_| format!("{unix_ms} ms after 1970"));
    match SystemTime::now().duration_since(at) {
        Ok(ago) => format!("{stamp} ({} ago)", since(ago)),
        Err(_) => stamp,
    }
}

/// `42s`, `3m`, `5h`, `2d`.
pub fn since(d: Duration) -> String {
    indicatif::HumanDuration(d).to_string()
}

/// A byte progress bar on stderr, drawn only when stderr is a terminal; its
/// length is set as the total becomes known.
pub fn bytes_bar(what: &str) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {wide_bar} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

/// A spinner with `what` and the time so far on stderr, drawn only when
/// stderr is a terminal.
pub fn spinner(what: &str) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_as_a_person_would() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.00 MiB");
        let s = when(1_795_000_000_000);
        assert!(s.starts_with("2026-11-18 ") && s.contains("UTC"), "{s}");
        let t = table(&["a", "size"], &["size"]).to_string();
        assert!(t.contains("size"), "{t}");
    }
}
