//! Writes the CustomResourceDefinitions of every Atrium kind, one YAML file per CRD, into each
//! directory given as an argument (`make crds` runs `crdgen crds charts/atrium/files/crds`).
//!
//! Stale `*.atrium.dev.yaml` files in that directory are removed, so a renamed kind leaves no
//! orphan behind.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::{env, fs, io};

use atrium::api::{GROUP, all_crds, crd_file_name, crd_yaml};

fn main() -> ExitCode {
    let dirs: Vec<PathBuf> = env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        eprintln!("usage: crdgen <output-directory>...");
        return ExitCode::from(2);
    }
    for dir in &dirs {
        if let Err(err) = generate(dir) {
            eprintln!("crdgen: {}: {err}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn generate(dir: &PathBuf) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut written = BTreeSet::new();
    for crd in all_crds() {
        let name = crd_file_name(&crd);
        fs::write(dir.join(&name), crd_yaml(&crd))?;
        println!("wrote {}", dir.join(&name).display());
        written.insert(name);
    }

    let suffix = format!(".{GROUP}.yaml");
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(&suffix) && !written.contains(&name) {
            fs::remove_file(dir.join(&name))?;
            println!("removed stale {}", dir.join(&name).display());
        }
    }
    Ok(())
}
