//! Builds the guest components (wasm32-wasip2) that the host embeds or its tests load:
//! - `guests/` (the default pass-through guest, compiled into the binary, and the examples);
//! - `tests/guests/` (misbehaving guests for the sandbox tests).
//!
//! Each `.wasm` lands in `$OUT_DIR/guests/`; `BROKER_TEST_GUESTS` names that directory for the tests.
//! The nested cargo uses its own target directory so it never waits on the outer build's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let guests_out = out_dir.join("guests");
    std::fs::create_dir_all(&guests_out).unwrap();

    for watched in ["wit", "guests", "tests/guests"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for workspace in ["guests", "tests/guests"] {
        build_workspace(&root.join(workspace), &out_dir.join("guest-target"), &guests_out);
    }
    println!("cargo:rustc-env=BROKER_TEST_GUESTS={}", guests_out.display());
}

fn build_workspace(workspace: &Path, target_dir: &Path, guests_out: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir);
    // The outer build's flags and wrappers are for the host, not for wasm guests.
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        command.env_remove(variable);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running cargo for {}: {e}", workspace.display()));
    assert!(
        status.success(),
        "building the guests in {} failed; is the target installed? run `rustup target add {TARGET}`",
        workspace.display()
    );
    let release = target_dir.join(TARGET).join("release");
    for entry in std::fs::read_dir(&release).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            std::fs::copy(&path, guests_out.join(path.file_name().unwrap())).unwrap();
        }
    }
}
