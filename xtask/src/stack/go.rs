//! Building the stack's Go servers and tools (Kubernetes, etcd, helm, versitygw) from the Go
//! module proxy: one pinned module per folder under `xtask/go/`, binaries into the shared bin
//! folder, once per version.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{Ctx, installed, progress, require_tool};

/// The Go toolchain: `$GO`, else `go` on PATH, else the usual /usr/local/go install.
pub fn find_go() -> Option<PathBuf> {
    if let Some(go) = std::env::var_os("GO") {
        return Some(PathBuf::from(go));
    }
    crate::prereqs::on_path("go").or_else(|| {
        let fallback = Path::new("/usr/local/go/bin/go");
        fallback.exists().then(|| fallback.to_path_buf())
    })
}

fn go_tool() -> Result<PathBuf> {
    if let Some(go) = find_go() {
        return Ok(go);
    }
    require_tool(
        "go",
        "Go 1.26 or newer (https://go.dev/doc/install), or set GO=/path/to/go",
    )?;
    Ok(PathBuf::from("go"))
}

/// Whether every `(name, version)` of `binaries` is built (else a Go toolchain is needed).
pub(super) fn all_built(ctx: &Ctx, binaries: &[(&str, &str)]) -> bool {
    binaries
        .iter()
        .all(|(name, version)| built(ctx, name, version))
}

/// Whether `<bin>/<name>` exists and its `<name>.version` marker holds `version`.
pub(super) fn built(ctx: &Ctx, name: &str, version: &str) -> bool {
    installed(&ctx.bin_dir().join(name))
        && std::fs::read_to_string(ctx.bin_dir().join(format!("{name}.version")))
            .is_ok_and(|v| v.trim() == version)
}

/// Build the commands `targets` (package, binary name) of the Go module `xtask/go/<module>` into
/// the bin folder, skipping those already built at `version`. Go's own module and build caches
/// (~/go, ~/.cache/go-build) are kept, so a rebuild after a version bump is incremental.
pub(super) fn go_build(
    ctx: &Ctx,
    module: &str,
    version: &str,
    ldflags: &str,
    targets: &[(&str, &str)],
) -> Result<()> {
    let module_dir = ctx.repo.join("xtask/go").join(module);
    for (pkg, name) in targets {
        if built(ctx, name, version) {
            progress(&format!("{name} {version} already built"));
            continue;
        }
        let go = go_tool()?;
        let staging = ctx.home.join("build").join(module);
        std::fs::create_dir_all(&staging)?;
        let out = staging.join(name);
        progress(&format!(
            "building {name} {version} from {} (Go; the first build takes many minutes)",
            module_dir.display()
        ));
        let start = Instant::now();
        let child = Command::new(&go)
            .current_dir(&module_dir)
            .args([
                "build",
                "-trimpath",
                "-buildvcs=false",
                "-ldflags",
                ldflags,
                "-o",
            ])
            .arg(&out)
            .arg(pkg)
            .spawn()
            .with_context(|| format!("running {} build {pkg}", go.display()))?;
        // Go prints nothing while it compiles; the heartbeat names the packages it is on.
        let status = crate::heartbeat::wait("stack", &format!("go build {name}"), child)?;
        if !status.success() {
            bail!(
                "go build {pkg} (in {}) failed with {status}",
                module_dir.display()
            );
        }
        std::fs::rename(&out, ctx.bin_dir().join(name)).with_context(|| {
            format!("moving {} into {}", out.display(), ctx.bin_dir().display())
        })?;
        std::fs::write(ctx.bin_dir().join(format!("{name}.version")), version)?;
        progress(&format!(
            "built {name} {version} in {:.0}s",
            start.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Certificates and kubeconfigs
