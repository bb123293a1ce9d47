//! Images map to local binaries: the last path segment of the image's repository, without tag or
//! digest, looked up in a colon-separated search path.
//!
//! `ghcr.io/tributary-dev/tributary-runtime:0.1.0` -> `tributary-runtime`;
//! `localhost:5000/tools/echo@sha256:...` -> `echo`.

use std::path::{Path, PathBuf};

/// The binary name an image maps to, or `None` for an empty reference.
pub fn binary_name(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or_default();
    let last = without_digest.rsplit('/').next().unwrap_or_default();
    // A tag follows the last ':' of the last segment (a registry port is in an earlier segment).
    let name = last.split(':').next().unwrap_or_default();
    (!name.is_empty()).then_some(name)
}

/// The folders of a colon-separated search path (empty entries dropped).
pub fn search_dirs(path: &str) -> Vec<PathBuf> {
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// The first executable file named `name` in `dirs`.
pub fn find_binary(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return None;
    }
    dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The program a container runs, Kubernetes style: without `command` the image's entrypoint
/// (the mapped binary) runs with `args`; with `command`, `command[0]` replaces the entrypoint. A
/// `command[0]` whose file name is in the search path runs that local build (so
/// `/usr/local/bin/tributary-runtime` in a manifest finds the workspace's binary); anything
/// else is run as written (an absolute path or a name looked up in `PATH`).
pub fn argv(
    entrypoint: &Path,
    command: &[String],
    args: &[String],
    lookup: impl Fn(&str) -> Option<PathBuf>,
) -> Vec<String> {
    let mut out = Vec::new();
    match command.split_first() {
        None => out.push(entrypoint.display().to_string()),
        Some((first, rest)) => {
            let file = first.rsplit('/').next().unwrap_or(first);
            out.push(lookup(file).map_or_else(|| first.clone(), |p| p.display().to_string()));
            out.extend(rest.iter().cloned());
        }
    }
    out.extend(args.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        for (image, name) in [
            (
                "ghcr.io/tributary-dev/tributary-runtime:0.1.0",
                "tributary-runtime",
            ),
            ("tributary-operator", "tributary-operator"),
            ("localhost:5000/tools/echo@sha256:abcd", "echo"),
            ("localhost:5000/echo:1@sha256:abcd", "echo"),
            (
                "registry.example.internal/tributary/runtime:0.1.0",
                "runtime",
            ),
        ] {
            assert_eq!(binary_name(image), Some(name), "{image}");
        }
        assert_eq!(binary_name(""), None);
        assert_eq!(binary_name("repo/:tag"), None);
    }

    #[test]
    fn search_path_finds_executables_only() -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("agent-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("plain"), "x")?;
        std::fs::write(dir.join("tool"), "#!/bin/sh\n")?;
        std::fs::set_permissions(dir.join("tool"), std::fs::Permissions::from_mode(0o755))?;
        let dirs = search_dirs(&format!("/nonexistent::{}", dir.display()));
        assert_eq!(dirs.len(), 2);
        assert_eq!(find_binary(&dirs, "tool"), Some(dir.join("tool")));
        assert_eq!(find_binary(&dirs, "plain"), None);
        assert_eq!(find_binary(&dirs, "../tool"), None);
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let entry = Path::new("/b/runtime");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let lookup = |n: &str| (n == "runtime").then(|| PathBuf::from("/b/runtime"));
        assert_eq!(argv(entry, &[], &[], lookup), s(&["/b/runtime"]));
        assert_eq!(
            argv(entry, &[], &s(&["--config", "x"]), lookup),
            s(&["/b/runtime", "--config", "x"])
        );
        assert_eq!(
            argv(entry, &s(&["sh", "-c"]), &s(&["echo hi"]), lookup),
            s(&["sh", "-c", "echo hi"])
        );
        assert_eq!(
            argv(entry, &s(&["/usr/local/bin/runtime", "run"]), &[], lookup),
            s(&["/b/runtime", "run"])
        );
    }
}
