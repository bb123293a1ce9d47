//! Parquet reference files: columns found by name, whatever their physical type (ints, decimals,
//! strings); every value goes through its exact text form, so a Parquet decimal keeps its digits
//! and the same row rules apply as for CSV.

use arrow::array::{Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{FileLoad, ReferenceError, ReferenceRow, RejectedRow};

pub fn parse_parquet<T: ReferenceRow>(
    file: &str,
    bytes: bytes::Bytes,
) -> Result<FileLoad<T>, ReferenceError> {
    let bad = |e: &dyn std::fmt::Display| ReferenceError::Parquet {
        file: file.to_string(),
        message: e.to_string(),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| bad(&e))?
        .build()
        .map_err(|e| bad(&e))?;
    let mut load = FileLoad {
        rows: Vec::new(),
        rejected: Vec::new(),
    };
    let mut row_number: u64 = 0;
    // The last reference column is a datetime the original dropped: optional here too.
    let required = T::COLUMNS.len() - 1;
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let mut columns: Vec<Option<StringArray>> = Vec::with_capacity(T::COLUMNS.len());
        for (i, name) in T::COLUMNS.iter().enumerate() {
            match batch.column_by_name(name) {
                Some(col) => {
                    let text = cast(col, &DataType::Utf8).map_err(|e| bad(&e))?;
                    let text = text
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .cloned()
                        .ok_or_else(|| bad(&"a column did not cast to text"))?;
                    columns.push(Some(text));
                }
                None if i >= required => columns.push(None),
                None => {
                    return Err(ReferenceError::MissingColumn {
                        file: file.to_string(),
                        column: name,
                    });
                }
            }
        }
        for r in 0..batch.num_rows() {
            row_number += 1;
            let cols: Vec<&str> = columns
                .iter()
                .map(|c| match c {
                    Some(a) if !a.is_null(r) => a.value(r),
                    _ => "",
                })
                .collect();
            match T::from_columns(&cols) {
                Ok(Some(row)) => load.rows.push(row),
                Ok(None) => {}
                Err(error) => load.rejected.push(RejectedRow {
                    file: file.to_string(),
                    row: row_number,
                    error,
                }),
            }
        }
    }
    Ok(load)
}
