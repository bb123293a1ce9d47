//! Reading a savepoint back into a new state, with any replica count (see [`super`] for what
//! each replica takes).

use std::collections::BTreeMap;

use aws_sdk_s3::Client;

use super::format::{MANIFEST, PartManifest, part_dir, verify_file};
use super::{RestoreFigures, SavepointError};
use crate::engine::{Core, RestoredRow, Streams};
use crate::events::{decode_address, decode_customer};
use crate::objects;
use crate::s3uri::S3Uri;
use crate::source::Position;
use crate::source::assign::{owner, owner_of_range};
use crate::source::kinesis::plan::ShardInfo;
use crate::state::export::{Family, decode_item, decode_pending, decode_promo};

/// Rows applied between two commits of the restore (bounds the overlay's memory).
const COMMIT_EVERY: u64 = 100_000;

/// A savepoint whose manifests are all present and verified.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The savepoint's folder, `<savepoints.uri>/<id>`.
    pub folder: S3Uri,
    /// Parts `0..replicas`, in order.
    pub parts: Vec<PartManifest>,
}

fn uri_of(folder: &S3Uri, key: &str) -> String {
    format!("s3://{}/{key}", folder.bucket)
}

async fn get(client: &Client, folder: &S3Uri, key: &str) -> Result<Vec<u8>, SavepointError> {
    objects::get(client, &folder.bucket, key)
        .await?
        .ok_or_else(|| SavepointError::Missing(uri_of(folder, key)))
}

/// Read and check every part's manifest of the savepoint at `folder`.
pub async fn load(client: &Client, folder: &S3Uri) -> Result<Loaded, SavepointError> {
    let manifest_key = |ordinal: u32| folder.key(&format!("{}/{MANIFEST}", part_dir(ordinal)));
    let key0 = manifest_key(0);
    let first = PartManifest::parse(&uri_of(folder, &key0), &get(client, folder, &key0).await?)?;
    let mut parts = vec![first.clone()];
    for ordinal in 1..first.replicas {
        let key = manifest_key(ordinal);
        let uri = uri_of(folder, &key);
        let part = PartManifest::parse(&uri, &get(client, folder, &key).await?)?;
        part.check_against(&uri, &first)?;
        if part.ordinal != ordinal {
            return Err(SavepointError::Config(format!(
                "{uri}: says it is part {} where part {ordinal} belongs",
                part.ordinal
            )));
        }
        parts.push(part);
    }
    if !first.dimension_cut {
        return Err(SavepointError::Config(format!(
            "{}: part 0 carries no dimension state",
            uri_of(folder, &key0)
        )));
    }
    Ok(Loaded {
        folder: folder.clone(),
        parts,
    })
}

/// Check a whole savepoint without restoring it: every manifest verified (by [`load`]) and
/// every data file present with the size its manifest gives. Returns the total size.
pub async fn check(client: &Client, folder: &S3Uri) -> Result<(Loaded, u64), SavepointError> {
    let loaded = load(client, folder).await?;
    let mut bytes = 0;
    for (ordinal, part) in loaded.parts.iter().enumerate() {
        let ordinal = u32::try_from(ordinal).unwrap_or(u32::MAX);
        for f in &part.files {
            let key = folder.key(&format!("{}/{}", part_dir(ordinal), f.name));
            match objects::size(client, &folder.bucket, &key).await? {
                None => return Err(SavepointError::Missing(uri_of(folder, &key))),
                Some(n) if n != f.bytes => {
                    return Err(SavepointError::Config(format!(
                        "{}: {n} bytes, its manifest says {}",
                        uri_of(folder, &key),
                        f.bytes
                    )));
                }
                Some(n) => bytes += n,
            }
        }
    }
    Ok((loaded, bytes))
}

/// Which new replica takes a waiting sale: the owner, under the new replica count, of the
/// open sales shard its partition key (`bill_customer_id`) routes to, so that later records of
/// that line (a correction, a retry) reach the replica holding it.
#[derive(Clone, Debug)]
pub struct Router {
    /// Open shards: first and last hash key, owner.
    open: Vec<(u128, u128, u32)>,
    replicas: u32,
}

impl Router {
    pub fn new(shards: &[ShardInfo], replicas: u32) -> Self {
        let open = shards
            .iter()
            .filter(|s| !s.closed)
            .map(|s| {
                let (lo, hi) = (s.starting_hash_key, s.ending_hash_key);
                (lo, hi, owner_of_range(lo, hi, replicas))
            })
            .collect();
        Self { open, replicas }
    }

    /// The replica of a bill customer's sales.
    pub fn owner(&self, bill_customer_id: &str) -> u32 {
        let h = partition_hash(bill_customer_id);
        self.open
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&h))
            .map_or_else(|| owner(h, self.replicas), |(_, _, o)| *o)
    }
}

/// Kinesis' hash key of a partition key: its MD5 as a 128-bit integer.
pub fn partition_hash(partition_key: &str) -> u128 {
    use md5::{Digest, Md5};
    let digest = Md5::digest(partition_key.as_bytes());
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(raw)
}

/// Of two positions of one shard (written by two parts), the one further on.
fn further(a: Position, b: Position) -> Position {
    match (a, b) {
        (Position::Finished, _) | (_, Position::Finished) => Position::Finished,
        (Position::After(x), Position::After(y)) => {
            // Sequence numbers are decimal: longer is greater, then by digits.
            if (y.len(), &y) > (x.len(), &x) {
                Position::After(y)
            } else {
                Position::After(x)
            }
        }
    }
}

/// The positions a replica restores: part 0's for the dimension streams, every part's for the
/// sales stream.
pub fn positions(loaded: &Loaded, streams: &Streams) -> BTreeMap<(String, String), Position> {
    let mut out: BTreeMap<(String, String), Position> = BTreeMap::new();
    for part in &loaded.parts {
        for (stream, shards) in &part.positions {
            let take = if *stream == streams.sales {
                true
            } else {
                part.ordinal == 0 && (*stream == streams.customers || *stream == streams.addresses)
            };
            if !take {
                continue;
            }
            for (shard, p) in shards {
                let key = (stream.clone(), shard.clone());
                let p = Position::decode(p);
                let p = match out.remove(&key) {
                    Some(existing) => further(existing, p),
                    None => p,
                };
                out.insert(key, p);
            }
        }
    }
    out
}

/// Apply the lines of one verified file to `core` (blocking).
pub(crate) fn apply(
    core: &mut Core,
    family: Family,
    key: &str,
    body: &[u8],
    take: &dyn Fn(&str) -> bool,
    figures: &mut RestoreFigures,
    since_commit: &mut u64,
) -> Result<(), SavepointError> {
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| SavepointError::Decode {
            key: key.to_string(),
            line: i as u64 + 1,
            reason,
        };
        match family {
            Family::Customers => {
                let c = decode_customer(line).map_err(|e| bad(e.to_string()))?;
                core.restore_row(RestoredRow::Customer(c))?;
                figures.customer_versions += 1;
            }
            Family::Addresses => {
                let a = decode_address(line).map_err(|e| bad(e.to_string()))?;
                core.restore_row(RestoredRow::Address(a))?;
                figures.address_versions += 1;
            }
            Family::Items => {
                let item = decode_item(line).map_err(|e| bad(e.to_string()))?;
                core.restore_row(RestoredRow::Item(item))?;
                figures.reference_rows += 1;
            }
            Family::Promos => {
                let promo = decode_promo(line).map_err(|e| bad(e.to_string()))?;
                core.restore_row(RestoredRow::Promo(promo))?;
                figures.reference_rows += 1;
            }
            Family::Pending => {
                let p = decode_pending(line).map_err(|e| bad(e.to_string()))?;
                figures.waiting_sales_seen += 1;
                if !take(p.sale.bill_customer_id.as_str()) {
                    continue;
                }
                core.restore_pending(p)?;
                figures.waiting_sales_taken += 1;
            }
        }
        *since_commit += 1;
        if *since_commit >= COMMIT_EVERY {
            core.commit()?;
            *since_commit = 0;
        }
    }
    Ok(())
}

/// Restore this replica's share of `loaded` into `core` (a new, empty state), commit it with
/// its positions, and hand the core back. The caller records the state's identity after.
pub async fn restore(
    mut core: Core,
    client: &Client,
    loaded: &Loaded,
    ordinal: u32,
    router: &Router,
    streams: &Streams,
) -> Result<(Core, RestoreFigures), SavepointError> {
    let mut figures = RestoreFigures {
        parts: u32::try_from(loaded.parts.len()).unwrap_or(u32::MAX),
        ..RestoreFigures::default()
    };
    let mut since_commit = 0u64;
    // Dimension and reference rows first, then the waiting sales, evaluated against them.
    let mut plan: Vec<(u32, Family)> = [
        Family::Customers,
        Family::Addresses,
        Family::Items,
        Family::Promos,
    ]
    .into_iter()
    .map(|f| (0, f))
    .collect();
    plan.extend((0..figures.parts).map(|p| (p, Family::Pending)));
    for (part, family) in plan {
        let manifest = &loaded.parts[part as usize];
        for entry in manifest.files_of(family) {
            let key = loaded
                .folder
                .key(&format!("{}/{}", part_dir(part), entry.name));
            let uri = uri_of(&loaded.folder, &key);
            let body = get(client, &loaded.folder, &key).await?;
            verify_file(&uri, entry, &body)?;
            figures.bytes += body.len() as u64;
            let mut f = std::mem::take(&mut figures);
            let router = router.clone();
            let (c, f, n) = tokio::task::spawn_blocking(move || {
                let take = |customer: &str| router.owner(customer) == ordinal;
                let r = apply(
                    &mut core,
                    family,
                    &uri,
                    &body,
                    &take,
                    &mut f,
                    &mut since_commit,
                );
                r.map(|()| (core, f, since_commit))
            })
            .await??;
            core = c;
            figures = f;
            since_commit = n;
        }
    }
    let positions = positions(loaded, streams);
    figures.positions = positions.len() as u64;
    core.restore_positions(positions);
    let core = tokio::task::spawn_blocking(move || core.commit().map(|_| core)).await??;
    Ok((core, figures))
}
