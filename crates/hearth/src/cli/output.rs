//! Printing results: a table for people, JSON for scripts (`--json`).

use comfy_table::presets::NOTHING;
use comfy_table::Table;
use serde::Serialize;

pub fn json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A borderless table with a header row.
pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    let mut n = 0;
    for r in rows {
        t.add_row(r);
        n += 1;
    }
    if n == 0 {
        println!("(none)");
    } else {
        println!("{t}");
    }
}

/// `key: value` lines for one object.
pub fn fields(pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{k:<w$}  {v}");
    }
}

pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn opt_when(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.as_ref().map(when).unwrap_or_else(|| "-".into())
}
