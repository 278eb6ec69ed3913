//! `idbridge export` / `import`: the whole store as JSON lines; `idbridge backup`: an online
//! copy of the SQLite store file.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use idbridge_store::{ExportRecord, StoreError};

use crate::config::Config;

pub fn export(config: &Config, output: Option<&Path>) -> anyhow::Result<()> {
    let store = crate::open_store(config)?;
    let sink: Box<dyn Write> = match output {
        None => Box::new(std::io::stdout().lock()),
        Some(p) if p == Path::new("-") => Box::new(std::io::stdout().lock()),
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
    };
    let mut out = BufWriter::new(sink);
    let mut count = 0u64;
    store.export(&mut |record| {
        let line =
            serde_json::to_string(&record).map_err(|e| StoreError::Backend(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| StoreError::Backend(e.to_string()))?;
        count += 1;
        Ok(())
    })?;
    out.flush()?;
    eprintln!("exported {count} records");
    Ok(())
}

/// `idbridge backup <file>`: works while the server runs (it reads the store file only).
pub fn online(config: &Config, file: &Path) -> anyhow::Result<()> {
    let source = config
        .server
        .data_dir
        .join(idbridge_store::SQLITE_FILE_NAME);
    let summary = idbridge_store::backup_sqlite_file(&source, file)?;
    println!(
        "backup written to {} ({} bytes, events up to seq {}, {:.1} s); to restore, stop the \
         server and put it in place of {}",
        summary.path.display(),
        summary.bytes,
        summary.last_event_seq,
        summary.elapsed.as_secs_f64(),
        source.display()
    );
    Ok(())
}

pub fn import(config: &Config, input: &Path) -> anyhow::Result<()> {
    let store = crate::open_store(config)?;
    let reader: Box<dyn BufRead> = if input == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?,
        ))
    };
    let mut records = reader.lines().enumerate().map(|(i, line)| {
        let line = line.map_err(|e| StoreError::Backend(format!("line {}: {e}", i + 1)))?;
        serde_json::from_str::<ExportRecord>(&line)
            .map_err(|e| StoreError::Backend(format!("line {}: {e}", i + 1)))
    });
    let n = store.import(&mut records)?;
    eprintln!(
        "imported {n} records into {}",
        config.server.data_dir.display()
    );
    Ok(())
}
