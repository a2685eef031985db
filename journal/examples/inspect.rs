//! The journal's operator tools from the command line, until the appliance binary wires them:
//! `cargo run --release -p journal --example inspect -- verify|stats|salvage|count DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use journal::inspect;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, dir] = args.as_slice() else {
        eprintln!("usage: inspect verify|stats|salvage|count DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let result = match command.as_str() {
        "verify" => inspect::verify(&dir).map(|s| s.to_string()),
        "stats" => inspect::stats(&dir).map(|s| s.to_string()),
        "salvage" => inspect::salvage(&dir).map(|s| s.to_string()),
        "count" => inspect::raw_records(&dir)
            .try_fold(0u64, |n, r| r.map(|_| n + 1))
            .map(|n| format!("{n} records")),
        other => {
            eprintln!("unknown command {other}; usage: inspect verify|stats|salvage|count DIR");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
