//! The state volume: which state a replica runs on, and replacing it without losing the old
//! one until the new one is complete.
//!
//! The state folder holds one or more state directories (`db-<n>/`, each a RocksDB with its
//! outbox) and a file `ACTIVE` naming the one in use. A replacement (a fresh start or a
//! restore, see `tributary_crds::job_config::StateConfig`) fills a new directory and switches
//! `ACTIVE` to it only once it is complete (written to a temporary file, synced, renamed), then
//! removes the others. A crash or a failed restore before the switch leaves the old state
//! active and untouched: the replica can be started again on it (a rollback needs nothing
//! more than the old configuration).

use std::path::{Path, PathBuf};

use tributary_crds::job_config::{SavepointLocation, StateConfig};

use super::export::Identity;
use super::{RocksState, StateError};

const ACTIVE: &str = "ACTIVE";
const PREFIX: &str = "db-";

/// What a replica does with the state its volume holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Run on it.
    AsIs,
    /// Run on it, recording the configured id (a new volume, or no id recorded yet).
    Adopt,
    /// Replace it with an empty state (positions from `startPosition`).
    Fresh,
    /// Replace it with this replica's share of a savepoint.
    Restore(SavepointLocation),
}

/// The decision, from what the active state holds and what the configuration wants.
pub fn start_kind(found: &Identity, wanted: &StateConfig) -> Start {
    if wanted.id.is_empty() {
        return Start::AsIs;
    }
    let replace = || match &wanted.restore {
        Some(sp) => Start::Restore(sp.clone()),
        None => Start::Fresh,
    };
    match found {
        Identity::Named(id) if *id == wanted.id => Start::AsIs,
        Identity::Unnamed if wanted.restore.is_none() => Start::Adopt,
        Identity::Unnamed | Identity::Named(_) | Identity::Incomplete => replace(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("state folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Active { path: PathBuf, reason: String },
    #[error(transparent)]
    State(#[from] StateError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state folder of a replica.
#[derive(Clone, Debug)]
pub struct Volume {
    dir: PathBuf,
}

/// A state being filled in a directory of its own, not active yet.
#[derive(Debug)]
pub struct Replacement {
    name: String,
}

impl Volume {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn active_name(&self) -> Result<Option<String>, VolumeError> {
        let path = self.dir.join(ACTIVE);
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                let name = s.trim().to_string();
                let valid = name
                    .strip_prefix(PREFIX)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if !valid {
                    return Err(VolumeError::Active {
                        path,
                        reason: format!("names {name:?}, not a state directory"),
                    });
                }
                Ok(Some(name))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The state directories present, by number.
    fn slots(&self) -> Result<Vec<(u64, String)>, VolumeError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let e = e.map_err(io(&self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix(PREFIX)
                .and_then(|n| n.parse::<u64>().ok())
            {
                out.push((n, name));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Open the active state (a new one, made active, on a new volume).
    pub fn open_active(&self) -> Result<RocksState, VolumeError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let name = match self.active_name()? {
            Some(n) => n,
            None => {
                let name = format!("{PREFIX}1");
                self.write_active(&name)?;
                name
            }
        };
        Ok(RocksState::open(self.dir.join(name))?)
    }

    /// Start filling a new state beside the active one (left-overs of an earlier attempt are
    /// removed first). It counts as incomplete until [`Volume::activate`].
    pub fn begin_replacement(&self) -> Result<(RocksState, Replacement), VolumeError> {
        let active = self.active_name()?;
        let mut next = 1;
        for (n, name) in self.slots()? {
            next = next.max(n + 1);
            if Some(&name) != active.as_ref() {
                let path = self.dir.join(&name);
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        let name = format!("{PREFIX}{next}");
        let state = RocksState::open(self.dir.join(&name))?;
        state.begin_identity()?;
        Ok((state, Replacement { name }))
    }

    /// Make a completed replacement the active state and remove every other one. The caller
    /// keeps its open state: only the other directories are removed.
    pub fn activate(&self, replacement: Replacement) -> Result<(), VolumeError> {
        self.write_active(&replacement.name)?;
        for (_, name) in self.slots()? {
            if name != replacement.name {
                let path = self.dir.join(&name);
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }

    fn write_active(&self, name: &str) -> Result<(), VolumeError> {
        use std::io::Write;
        let tmp = self.dir.join(format!("{ACTIVE}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(name.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        let path = self.dir.join(ACTIVE);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        // The rename is durable once the folder is synced.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(id: &str, restore: Option<&str>) -> StateConfig {
        StateConfig {
            id: id.into(),
            restore: restore.map(|r| SavepointLocation {
                id: r.into(),
                uri: format!("s3://b/sp/{r}"),
            }),
        }
    }

    #[test]
    fn the_start_follows_the_recorded_id() {
        let named = |s: &str| Identity::Named(s.into());
        assert_eq!(start_kind(&named("a"), &wanted("", None)), Start::AsIs);
        assert_eq!(
            start_kind(&Identity::Incomplete, &wanted("", None)),
            Start::AsIs
        );
        assert_eq!(start_kind(&named("a"), &wanted("a", None)), Start::AsIs);
        assert_eq!(
            start_kind(&named("a"), &wanted("a", Some("sp"))),
            Start::AsIs
        );
        assert_eq!(
            start_kind(&Identity::Unnamed, &wanted("a", None)),
            Start::Adopt
        );
        assert_eq!(start_kind(&named("a"), &wanted("b", None)), Start::Fresh);
        assert_eq!(
            start_kind(&Identity::Incomplete, &wanted("b", None)),
            Start::Fresh
        );
        let restore = start_kind(&Identity::Unnamed, &wanted("b", Some("sp")));
        assert!(matches!(restore, Start::Restore(sp) if sp.id == "sp"));
        let restore = start_kind(&named("a"), &wanted("b", Some("sp")));
        assert!(matches!(restore, Start::Restore(_)));
    }

    #[test]
    fn a_replacement_becomes_active_only_when_activated() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volume::new(dir.path().join("state"));
        let state = v.open_active().unwrap();
        state.complete_identity("old", None).unwrap();
        drop(state);

        // An attempt that never completes (a crash, a damaged savepoint): the old state stays.
        let (new, _) = v.begin_replacement().unwrap();
        drop(new);
        let state = v.open_active().unwrap();
        assert_eq!(state.identity().unwrap(), Identity::Named("old".into()));
        drop(state);

        // The next attempt clears the left-over, and once activated replaces the old state.
        let (new, r) = v.begin_replacement().unwrap();
        assert_eq!(new.identity().unwrap(), Identity::Incomplete);
        new.complete_identity("new", Some("sp")).unwrap();
        v.activate(r).unwrap();
        drop(new);
        let slots = v.slots().unwrap();
        assert_eq!(slots.len(), 1, "{slots:?}");
        let state = v.open_active().unwrap();
        assert_eq!(state.identity().unwrap(), Identity::Named("new".into()));
        assert_eq!(state.restored_from().unwrap().as_deref(), Some("sp"));
    }

    #[test]
    fn a_damaged_active_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ACTIVE), "../elsewhere").unwrap();
        let e = Volume::new(dir.path()).open_active().unwrap_err();
        assert!(e.to_string().contains("not a state directory"), "{e}");
    }
}
