//! The Kinesis source (written by the source helper).
