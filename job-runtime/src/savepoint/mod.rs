//! Savepoints: the job's state written out logically and portably, and read back with any
//! replica count.
//!
//! # Taking one ([`control`])
//!
//! On an authenticated request the replica pauses its engine (which commits and then applies
//! nothing: no input, no reference data, no deadlines), asks its sinks to deliver everything
//! committed and waits until the outbox is empty, then writes its part ([`write`]): the
//! undelivered range is therefore always empty, and a savepoint never carries outputs. With
//! `stopAfter` the replica stays paused afterwards (so nothing it does later can be lost when
//! new pods restore the savepoint); otherwise it resumes. A failure resumes it too.
//!
//! # Restoring one ([`restore`])
//!
//! A replica started with a state id that its volume does not hold replaces its state before
//! reading anything: it reads part 0's manifest (which names the replica count N that wrote
//! the savepoint) and the manifests of parts 1..N, checks every checksum, then loads
//!
//! * the dimension and reference state of part 0, and part 0's dimension positions: every
//!   replica reads the dimension streams in full, so one replica's state is one consistent cut
//!   of them (the others would only repeat it, so they do not write it);
//! * every part's sales positions (each sales shard had one owner, whose position wins);
//!   a replica reads only the shards the assignment rule gives it under the new count, so the
//!   positions of the other shards are never used;
//! * its share of every part's waiting sales: a sale belongs to the replica whose slice of the
//!   hash key space holds the MD5 of its `bill_customer_id` (Kinesis' routing of the stream's
//!   partition key), so each waiting sale lands on exactly one replica. Each is evaluated
//!   against the restored cut as it is loaded: a sale that waited on one replica for a
//!   version another replica had already read is released then, and one still missing a
//!   piece waits again (with its original deadline) for the dimension records the new
//!   replicas read from the cut's positions on.
//!
//! A missing or damaged manifest or file, a newer format, or parts that disagree stop the
//! replica at start with the reason; the state is marked incomplete until the restore commits
//! in full (the next start begins again from an empty state), so nothing is half-restored.

pub mod control;
pub mod format;
pub mod restore;
pub mod write;

#[cfg(test)]
mod tests;

use tributary_crds::control::SavepointFigures;

use crate::engine::EngineError;
use crate::objects::ObjectError;
use crate::state::StateError;
pub use format::FormatError;

/// Errors of taking or restoring a savepoint.
#[derive(Debug, thiserror::Error)]
pub enum SavepointError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("{0}: missing (the savepoint is incomplete)")]
    Missing(String),
    #[error("{key} line {line}: {reason}")]
    Decode {
        key: String,
        line: u64,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
    #[error("{what} did not finish within {secs} s")]
    Timeout { what: &'static str, secs: u64 },
    #[error("the savepoint task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<crate::s3uri::S3UriError> for SavepointError {
    fn from(e: crate::s3uri::S3UriError) -> Self {
        Self::Config(e.to_string())
    }
}

/// Totals of a restore, for the log and the state report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreFigures {
    pub parts: u32,
    pub customer_versions: u64,
    pub address_versions: u64,
    pub reference_rows: u64,
    /// Waiting sales in the savepoint, and those this replica took.
    pub waiting_sales_seen: u64,
    pub waiting_sales_taken: u64,
    pub positions: u64,
    pub bytes: u64,
}

/// Add a file's figures to a part's.
fn count(figures: &mut SavepointFigures, family: crate::state::export::Family, lines: u64) {
    use crate::state::export::Family;
    match family {
        Family::Customers => figures.customer_versions += lines,
        Family::Addresses => figures.address_versions += lines,
        Family::Pending => figures.waiting_sales += lines,
        Family::Items | Family::Promos => {}
    }
}
