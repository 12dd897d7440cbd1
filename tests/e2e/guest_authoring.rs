//! Writing a guest outside this repository, exactly as the README's "Writing a guest" says:
//! `cargo component new --lib`, the WIT from `broker wit`, `cargo component build --release`, and
//! the `.wasm` dropped into a running Broker's guests directory. And the example guests build with
//! `cargo component build` as well as with plain `cargo build`. cargo-component is installed into
//! `~/.cargo/bin` by scripts/test (built once, then cached).

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestServer, install_guest};

const BROKER: &str = env!("CARGO_BIN_EXE_broker");

/// Runs `command`, failing the test with its output when it fails.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `cargo <args>` in `dir`, with the outer build's settings removed (they are for the host).
fn cargo(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(dir).args(args);
    for variable in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
    ] {
        command.env_remove(variable);
    }
    command
}

fn has_cargo_component() -> bool {
    Command::new("cargo")
        .args(["component", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// cargo-component installs a missing `wasm32-wasip1` through rustup on first use, and two tests doing
/// that at once corrupt each other's files: scripts/test installs both targets before any test runs, and
/// a test never installs anything itself.
fn assert_targets_installed() {
    let installed = run(Command::new("rustup").args(["target", "list", "--installed"]));
    for target in ["wasm32-wasip1", "wasm32-wasip2"] {
        assert!(
            installed.lines().any(|line| line.trim() == target),
            "rustup target {target} is not installed (scripts/test installs it)"
        );
    }
}

#[tokio::test]
async fn a_guest_written_outside_the_repository_by_the_readme_runs() {
    assert!(
        has_cargo_component(),
        "cargo-component is not installed (scripts/test installs it)"
    );
    assert_targets_installed();
    let work = tempfile::TempDir::new().unwrap();
    // 1. A new component library.
    run(&mut cargo(work.path(), &["component", "new", "--lib", "shouty"]));
    let project = work.path().join("shouty");
    // 2. Broker's contract as its world.
    let wit = run(Command::new(BROKER).arg("wit"));
    std::fs::write(project.join("wit/world.wit"), wit).unwrap();
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        format!("{manifest}\n[package.metadata.component.target]\npath = \"wit\"\nworld = \"validator\"\n"),
    )
    .unwrap();
    // 3. The guest: shout every string.
    std::fs::write(
        project.join("src/lib.rs"),
        r#"#[allow(warnings)]
mod bindings;

use bindings::{Event, Guest, Verdict};

struct Component;

impl Guest for Component {
    fn validate(event: Event) -> Verdict {
        match event.data.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(text) => Verdict::Replace(format!("\"{}\"", text.to_uppercase())),
            None => Verdict::Accept,
        }
    }
}

bindings::export!(Component with_types_in bindings);
"#,
    )
    .unwrap();
    // 4. Build it.
    run(&mut cargo(
        &project,
        &["component", "build", "--release", "--target", "wasm32-wasip2"],
    ));
    let wasm = project.join("target/wasm32-wasip2/release/shouty.wasm");
    assert!(wasm.exists(), "cargo component build wrote {}", wasm.display());

    // 5. Drop it into a running Broker: it takes effect without a restart.
    let server = TestServer::start().await;
    let jwt = server.signup("author", "loud").await;
    install_guest(server.dir.path(), "loud.wasm", &wasm);
    server.wait_for_log("guest installed", 1).await;
    let mut stream = server.subscribe(&jwt).await;
    let (status, body) = server.insert(&jwt, "say", json!("hello")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(stream.next().await.data, json!("HELLO"));
}

#[test]
fn the_example_guests_build_with_cargo_component_too() {
    assert!(
        has_cargo_component(),
        "cargo-component is not installed (scripts/test installs it)"
    );
    assert_targets_installed();
    // A copy, as cargo-component writes `src/bindings.rs` beside each guest's sources.
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let copy = tempfile::TempDir::new().unwrap();
    let guests = copy.path().join("guests");
    std::fs::create_dir(&guests).unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(repository.join("wit"))
        .arg(copy.path()));
    for entry in std::fs::read_dir(repository.join("guests")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|name| name != "target") {
            run(Command::new("cp").arg("-r").arg(&path).arg(&guests));
        }
    }
    let target = tempfile::TempDir::new().unwrap();
    let target_dir = target.path().to_str().unwrap();
    let build = [
        "component",
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--target-dir",
        target_dir,
    ];
    run(&mut cargo(&guests, &build));
    for guest in ["passthrough", "require_fields", "redact", "versioned"] {
        let wasm = target.path().join(format!("wasm32-wasip2/release/{guest}.wasm"));
        let bytes = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
        // A component, not a core module: the layer field of the preamble is 1.
        assert_eq!(&bytes[..8], b"\0asm\x0d\0\x01\0", "{guest} is a component");
    }
}
