//! How the client commands print: `-w/--write-out simple|json|table`, as etcdctl's. `simple`
//! is one line per item, fields separated by `, ` (a value alone, for `get`); `table` is a
//! bordered table with a header (comfy-table); `json` is the API's JSON.

use clap::ValueEnum;
use comfy_table::presets::ASCII_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};

/// The output format a command was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WriteOut {
    Simple,
    Json,
    Table,
}

/// Prints `rows` under `header` as `format` asks (`Json` is the caller's: it prints nothing
/// here).
pub fn print_rows(format: WriteOut, header: &[&str], rows: &[Vec<String>]) {
    match format {
        WriteOut::Json => {}
        WriteOut::Simple => {
            for row in rows {
                // Empty trailing fields (no error) are left out rather than printed as ", ".
                let filled = row.iter().rposition(|field| !field.is_empty()).map_or(0, |i| i + 1);
                println!("{}", row[..filled].join(", "));
            }
        }
        WriteOut::Table => {
            let mut table = Table::new();
            table
                .load_preset(ASCII_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Disabled)
                .set_header(header.iter().copied());
            for row in rows {
                table.add_row(row.iter().map(String::as_str));
            }
            println!("{table}");
        }
    }
}
