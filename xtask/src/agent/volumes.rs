//! Pod volumes as local folders. `configMap`, `secret`, `downwardAPI` and `projected` volumes
//! are written as files under the pod's folder when the pod starts (not refreshed afterwards);
//! `emptyDir` is an empty folder there; each `persistentVolumeClaim` is a folder keyed by
//! namespace and claim name that outlives pods; `hostPath` is the path itself. Other volume
//! types fail the pod's start with a clear message.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolumeClaim, Secret,
    ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};

use super::env::{EnvError, Facts, field_value};

/// The kubelet's default lifetime for projected service-account tokens. The API server extends
/// such tokens to a year by default (`--service-account-extend-token-expiration`), so the agent
/// does not refresh them.
const TOKEN_SECONDS: i64 = 3607;
const DEFAULT_MODE: i32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {name}")]
    KeyNotFound {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error(
        "volume {0}: unsupported volume type (the node agent knows configMap, secret, downwardAPI, projected, emptyDir, persistentVolumeClaim, hostPath)"
    )]
    Unsupported(String),
    #[error("volume {volume}: {path:?} is not a relative path inside the volume")]
    BadPath { volume: String, path: String },
    #[error("volumeMount {0} names no volume of the pod")]
    NoSuchVolume(String),
    #[error(transparent)]
    Field(#[from] EnvError),
    #[error("API: {0}")]
    Kube(#[from] kube::Error),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One file of a volume, relative to the volume's folder.
#[derive(Debug, PartialEq)]
pub struct File {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// A bind mount into a container's mount namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// A path inside a volume: relative, without `..`.
fn inside(volume: &str, path: &str) -> Result<(), VolumeError> {
    let p = Path::new(path);
    if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(VolumeError::BadPath {
            volume: volume.into(),
            path: path.into(),
        });
    }
    Ok(())
}

/// The files a ConfigMap or Secret projects: every key, or only `items` (key -> path, mode).
/// `data` is `None` when the object does not exist.
pub fn key_files(
    kind: &'static str,
    name: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: Option<i32>,
) -> Result<Vec<File>, VolumeError> {
    let mode = |m: Option<i32>| m.or(default_mode).unwrap_or(DEFAULT_MODE) as u32 & 0o777;
    let Some(data) = data else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(VolumeError::NotFound {
                kind,
                name: name.into(),
            })
        };
    };
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data
            .iter()
            .map(|(k, v)| File {
                path: k.clone(),
                data: v.clone(),
                mode: mode(None),
            })
            .collect());
    };
    let mut out = Vec::new();
    for item in items {
        match data.get(&item.key) {
            Some(v) => out.push(File {
                path: item.path.clone(),
                data: v.clone(),
                mode: mode(item.mode),
            }),
            None if optional => {}
            None => {
                return Err(VolumeError::KeyNotFound {
                    kind,
                    name: name.into(),
                    key: item.key.clone(),
                });
            }
        }
    }
    Ok(out)
}

fn downward_files(
    facts: &Facts<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
) -> Result<Vec<File>, VolumeError> {
    items
        .iter()
        .map(|item| {
            let value = match &item.field_ref {
                Some(f) => field_value(facts, &f.field_path)?,
                None => return Err(EnvError::UnsupportedField(item.path.clone()).into()),
            };
            Ok(File {
                path: item.path.clone(),
                data: value.into_bytes(),
                mode: item.mode.or(default_mode).unwrap_or(DEFAULT_MODE) as u32 & 0o777,
            })
        })
        .collect()
}

/// The bind mounts of a container: each `volumeMount` (with `subPath`) onto its volume's folder.
pub fn mounts(
    c: &Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<Mount>, VolumeError> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let base = volumes
                .get(&m.name)
                .ok_or_else(|| VolumeError::NoSuchVolume(m.name.clone()))?;
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => {
                    inside(&m.name, sub)?;
                    base.join(sub)
                }
                None => base.clone(),
            };
            Ok(Mount {
                source,
                target: m.mount_path.clone(),
                read_only: m.read_only == Some(true),
            })
        })
        .collect()
}

/// Where the agent keeps persistent volume claims: `<root>/<namespace>/<claim>`.
pub fn claim_dir(root: &Path, namespace: &str, claim: &str) -> PathBuf {
    root.join(namespace).join(claim)
}

/// Everything the volume set-up reads from the API and the agent.
pub struct Inputs<'a> {
    pub client: &'a kube::Client,
    pub facts: Facts<'a>,
    /// `<pod folder>/volumes`.
    pub dir: &'a Path,
    /// Root of the persistent claim folders.
    pub claims: &'a Path,
}

/// Materialise every volume of the pod; returns each volume's folder by name.
pub async fn prepare(inp: &Inputs<'_>) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let pod = inp.facts.pod;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = inp.dir.join(&v.name);
        let path = if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else if let Some(c) = &v.persistent_volume_claim {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(inp.client.clone(), &ns);
            if pvcs.get_opt(&c.claim_name).await?.is_none() {
                return Err(VolumeError::NotFound {
                    kind: "persistentvolumeclaim",
                    name: c.claim_name.clone(),
                });
            }
            let d = claim_dir(inp.claims, &ns, &c.claim_name);
            create_dir(&d)?;
            d
        } else {
            create_dir(&dir)?;
            for f in files_of(inp, &ns, v).await? {
                inside(&v.name, &f.path)?;
                write_file(&dir.join(&f.path), &f.data, f.mode)?;
            }
            dir
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// The files of a file-backed volume (none for emptyDir).
async fn files_of(inp: &Inputs<'_>, ns: &str, v: &Volume) -> Result<Vec<File>, VolumeError> {
    if v.empty_dir.is_some() {
        return Ok(Vec::new());
    }
    if let Some(c) = &v.config_map {
        let data = config_map(inp.client, ns, &c.name).await?;
        return key_files(
            "configmap",
            &c.name,
            data.as_ref(),
            c.items.as_deref(),
            c.optional == Some(true),
            c.default_mode,
        );
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = secret(inp.client, ns, &name).await?;
        return key_files(
            "secret",
            &name,
            data.as_ref(),
            s.items.as_deref(),
            s.optional == Some(true),
            s.default_mode,
        );
    }
    if let Some(d) = &v.downward_api {
        return downward_files(
            &inp.facts,
            d.items.as_deref().unwrap_or_default(),
            d.default_mode,
        );
    }
    let Some(p) = &v.projected else {
        return Err(VolumeError::Unsupported(v.name.clone()));
    };
    let mut files = Vec::new();
    for src in p.sources.iter().flatten() {
        if let Some(c) = &src.config_map {
            let data = config_map(inp.client, ns, &c.name).await?;
            files.extend(key_files(
                "configmap",
                &c.name,
                data.as_ref(),
                c.items.as_deref(),
                c.optional == Some(true),
                p.default_mode,
            )?);
        } else if let Some(s) = &src.secret {
            let data = secret(inp.client, ns, &s.name).await?;
            files.extend(key_files(
                "secret",
                &s.name,
                data.as_ref(),
                s.items.as_deref(),
                s.optional == Some(true),
                p.default_mode,
            )?);
        } else if let Some(d) = &src.downward_api {
            files.extend(downward_files(
                &inp.facts,
                d.items.as_deref().unwrap_or_default(),
                p.default_mode,
            )?);
        } else if let Some(t) = &src.service_account_token {
            let token = token(inp, ns, t.audience.clone(), t.expiration_seconds).await?;
            files.push(File {
                path: t.path.clone(),
                data: token.into_bytes(),
                mode: p.default_mode.unwrap_or(DEFAULT_MODE) as u32 & 0o777,
            });
        } else {
            return Err(VolumeError::Unsupported(v.name.clone()));
        }
    }
    Ok(files)
}

async fn config_map(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|cm| {
        let mut m: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        m.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        m
    }))
}

async fn secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }))
}

/// A TokenRequest for the pod's service account, bound to the pod (as the kubelet asks).
async fn token(
    inp: &Inputs<'_>,
    ns: &str,
    audience: Option<String>,
    seconds: Option<i64>,
) -> Result<String, VolumeError> {
    let pod = inp.facts.pod;
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a]),
            expiration_seconds: Some(seconds.unwrap_or(TOKEN_SECONDS)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(inp.client.clone(), ns);
    let resp: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &req)
        .await?;
    Ok(resp.status.and_then(|s| s.token).unwrap_or_default())
}

fn create_dir(d: &Path) -> Result<(), VolumeError> {
    std::fs::create_dir_all(d).map_err(|source| VolumeError::Io {
        path: d.to_path_buf(),
        source,
    })
}

/// Write atomically (a temporary file renamed into place) with the given mode.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), VolumeError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let tmp = path.with_extension("agent-tmp");
    std::fs::write(&tmp, data).map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;

    fn data() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ])
    }

    #[test]
    fn every_key_or_the_items() -> Result<(), VolumeError> {
        let all = key_files("configmap", "cm", Some(&data()), None, false, Some(0o600))?;
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].path.as_str(), all[0].mode), ("a", 0o600));
        let items = [KeyToPath {
            key: "b".into(),
            path: "sub/b.txt".into(),
            mode: Some(0o400),
        }];
        let some = key_files("secret", "s", Some(&data()), Some(&items), false, None)?;
        assert_eq!(
            some,
            [File {
                path: "sub/b.txt".into(),
                data: b"2".to_vec(),
                mode: 0o400
            }]
        );
        Ok(())
    }

    #[test]
    fn missing_objects_and_keys() {
        assert!(matches!(
            key_files("secret", "s", None, None, false, None),
            Err(VolumeError::NotFound { .. })
        ));
        assert!(matches!(key_files("secret", "s", None, None, true, None), Ok(v) if v.is_empty()));
        let items = [KeyToPath {
            key: "zz".into(),
            path: "zz".into(),
            mode: None,
        }];
        assert!(matches!(
            key_files("configmap", "c", Some(&data()), Some(&items), false, None),
            Err(VolumeError::KeyNotFound { .. })
        ));
        assert!(inside("v", "../etc/passwd").is_err());
        assert!(inside("v", "/etc/passwd").is_err());
        assert!(inside("v", "a/b").is_ok());
    }

    #[test]
    fn mounts_follow_volume_mounts() -> Result<(), VolumeError> {
        let c = Container {
            name: "c".into(),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "cfg".into(),
                    mount_path: "/etc/x".into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "cfg".into(),
                    mount_path: "/etc/y.yaml".into(),
                    sub_path: Some("y.yaml".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let vols = BTreeMap::from([("cfg".to_string(), PathBuf::from("/p/volumes/cfg"))]);
        let m = mounts(&c, &vols)?;
        assert_eq!(m[0].source, PathBuf::from("/p/volumes/cfg"));
        assert!(m[0].read_only);
        assert_eq!(m[1].source, PathBuf::from("/p/volumes/cfg/y.yaml"));
        assert!(mounts(&c, &BTreeMap::new()).is_err());
        assert_eq!(
            claim_dir(Path::new("/c"), "ns", "data-x-0"),
            PathBuf::from("/c/ns/data-x-0")
        );
        Ok(())
    }
}
