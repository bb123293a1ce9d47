//! AWS clients (Kinesis, S3) from the job configuration (written by the source helper).
