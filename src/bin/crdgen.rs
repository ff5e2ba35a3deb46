//! Writes every generated manifest (the CRDs, and the chart's copies of them and of the workspace
//! ClusterRoles) under the repository root given as the argument (default: the current folder).
//! `make crds` runs it. Stale `*.yaml` files in the generated folders are removed, so a renamed
//! kind leaves no orphan behind.

use std::{
    collections::BTreeSet,
    env, fs, io,
    path::{Path, PathBuf},
    process::ExitCode,
};

use atrium::manifests::{DIRS, generated};

fn main() -> ExitCode {
    let root = env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    match write_all(&root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("crdgen: {}: {err}", root.display());
            ExitCode::FAILURE
        }
    }
}

fn write_all(root: &Path) -> io::Result<()> {
    let files = generated();
    let wanted: BTreeSet<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    for (path, content) in &files {
        let full = root.join(path);
        fs::create_dir_all(full.parent().expect("generated files live in folders"))?;
        if fs::read_to_string(&full).ok().as_deref() != Some(content.as_str()) {
            fs::write(&full, content)?;
            println!("wrote {}", path.display());
        }
    }
    for dir in DIRS {
        for entry in fs::read_dir(root.join(dir))? {
            let name = PathBuf::from(dir).join(entry?.file_name());
            if name.extension().is_some_and(|e| e == "yaml") && !wanted.contains(&name) {
                fs::remove_file(root.join(&name))?;
                println!("removed stale {}", name.display());
            }
        }
    }
    Ok(())
}
