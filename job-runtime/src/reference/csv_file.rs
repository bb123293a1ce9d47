//! CSV reference files: the reference column order, an optional header row, RFC 4180 quoting.

use super::{FileLoad, ReferenceError, ReferenceRow, RejectedRow};

pub fn parse_csv<T: ReferenceRow>(file: &str, bytes: &[u8]) -> Result<FileLoad<T>, ReferenceError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        // Rows may omit the trailing (dropped) datetime column.
        .flexible(true)
        .from_reader(bytes);
    let mut load = FileLoad {
        rows: Vec::new(),
        rejected: Vec::new(),
    };
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                return Err(ReferenceError::Csv {
                    file: file.to_string(),
                    message: e.to_string(),
                });
            }
        }
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let cols: Vec<&str> = record.iter().collect();
        match T::from_columns(&cols) {
            Ok(Some(row)) => load.rows.push(row),
            Ok(None) => {} // header
            Err(error) => load.rejected.push(RejectedRow {
                file: file.to_string(),
                row: line,
                error,
            }),
        }
    }
    Ok(load)
}
