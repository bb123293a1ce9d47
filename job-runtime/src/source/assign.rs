//! Which replica reads which sales shard (written by the source helper).
