//! Input sources: the three Kinesis streams (polling or enhanced fan-out) and, for tests and
//! benchmarks, in-memory sources. Every source produces [`ShardBatch`]es on one bounded channel;
//! the engine applies them and commits each shard's position in the same RocksDB write as the
//! state the batch produced, so a source only ever *starts* from a committed [`Position`].
//!
//! Shard ownership (which replica reads which sales shard) is [`assign`]; the dimension streams
//! (customers, addresses) are read in full by every replica.

pub mod assign;
pub mod coordination;
pub mod kinesis;
pub mod metrics;

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

/// Which of the three inputs a stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamRole {
    Customers,
    Addresses,
    Sales,
}

impl StreamRole {
    pub const ALL: [Self; 3] = [Self::Customers, Self::Addresses, Self::Sales];

    /// Metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Customers => "customers",
            Self::Addresses => "addresses",
            Self::Sales => "sales",
        }
    }

    /// Customers and addresses: read in full by every replica.
    pub const fn is_dimension(self) -> bool {
        !matches!(self, Self::Sales)
    }
}

/// One record as read from a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    pub sequence: String,
    pub partition_key: String,
    pub data: Bytes,
    /// Kinesis' ApproximateArrivalTimestamp, in milliseconds since the epoch.
    pub arrival_ms: Option<i64>,
}

/// What one read of one shard returned. Batches of one shard arrive in order.
#[derive(Clone, Debug)]
pub struct ShardBatch {
    pub role: StreamRole,
    /// The stream name as configured (the offsets key).
    pub stream: String,
    pub shard_id: String,
    /// Possibly empty (an empty poll still reports `millis_behind_latest`).
    pub records: Vec<SourceRecord>,
    /// How far this read was behind the tip of the shard; `Some(0)` means caught up.
    pub millis_behind_latest: Option<i64>,
    /// When the read that returned this batch was *started* (the barrier of
    /// [`crate::engine`] compares these).
    pub requested_at: Instant,
    /// The shard is closed and this batch ends it: after it the shard is [`Position::Finished`].
    pub shard_end: bool,
}

/// A shard's committed position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// Resume after this sequence number.
    After(String),
    /// Every record of the (closed) shard has been processed; its children may start.
    Finished,
}

/// Committed positions by (configured stream name, shard id), as the engine publishes them to
/// the sources through a `tokio::sync::watch` channel after each commit.
pub type Positions = BTreeMap<(String, String), Position>;

/// Stored in place of a sequence number for a finished shard (sequence numbers are digits).
pub const FINISHED: &str = "SHARD_END";

impl Position {
    pub fn encode(&self) -> String {
        match self {
            Self::After(seq) => seq.clone(),
            Self::Finished => FINISHED.to_string(),
        }
    }

    pub fn decode(s: &str) -> Self {
        if s == FINISHED {
            Self::Finished
        } else {
            Self::After(s.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        for p in [
            Position::After("49590338271490256608559692538361571095921575989136588898".into()),
            Position::Finished,
        ] {
            assert_eq!(Position::decode(&p.encode()), p);
        }
        assert_eq!(Position::Finished.encode(), FINISHED);
        assert_eq!(Position::decode("12"), Position::After("12".into()));
    }
}
