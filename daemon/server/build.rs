//! Build information that `cardd support-bundle` reports in `version.txt`: the target triple
//! and the compiler's version. (The git commit comes from `CARDD_GIT_COMMIT`, read with
//! `option_env!` when the packaging sets it, so a commit does not rebuild the daemon.)

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=CARDD_BUILD_TARGET={target}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CARDD_BUILD_RUSTC={version}");
}
