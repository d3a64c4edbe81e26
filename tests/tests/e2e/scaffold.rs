//! Plugin authoring as a new author meets it: `switchyard plugin new` for
//! each kind and language, the project built as its README says (cargo;
//! componentize-py; componentize-js through `npm run build`), its `input.json` passing under `plugin test`, its
//! `switchyard.toml` loading it, and an edited rebuild hot-swapped into a
//! running proxy. Also: the SDK carries the contract it builds against,
//! the same as `wit/`, and packages as a crate.
//!
//! The Python projects need componentize-py, which `tests/install-deps.sh`
//! installs into a virtual environment of its own, and the JavaScript
//! projects componentize-js, which it installs with npm into
//! `~/.cache/switchyard/js`; the projects here link that `node_modules`
//! instead of downloading 400 MB each. Without them these tests fail and
//! say so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::proxy::run_cli;
use crate::support::{Proxy, TestBackend, backends_toml, config, eventually, replace_file};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The directory holding `componentize-py`: the one `tests/install-deps.sh`
/// makes, else whatever `PATH` has.
fn componentize_py_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let venv = Path::new(&home).join(".cache/switchyard/py-venv/bin");
    if venv.join("componentize-py").exists() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths).find(|d| d.join("componentize-py").exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "componentize-py is not installed: run tests/install-deps.sh \
                 (it installs it into ~/.cache/switchyard/py-venv)"
            )
        })
}

/// The `node_modules` holding componentize-js that `tests/install-deps.sh`
/// makes.
fn componentize_js_modules() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let modules = Path::new(&home).join(".cache/switchyard/js/node_modules");
    assert!(
        modules.join("@bytecodealliance/componentize-js").exists(),
        "componentize-js is not installed: run tests/install-deps.sh \
         (it installs it into ~/.cache/switchyard/js)"
    );
    modules
}

/// Builds the project in `dir` as its README says, and returns the
/// component. Rust projects build into a target directory the scaffold
/// tests share, so the SDK's dependencies build once.
fn build(dir: &Path, lang: &str) -> PathBuf {
    let name = dir.file_name().unwrap().to_str().unwrap().replace('-', "_");
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target");
    let mut command = if lang == "js" {
        let modules = dir.join("node_modules");
        if !modules.exists() {
            std::os::unix::fs::symlink(componentize_js_modules(), &modules).unwrap();
        }
        let mut npm = Command::new("npm");
        npm.args(["run", "build"]);
        npm
    } else if lang == "python" {
        let path = std::env::join_paths(std::iter::once(componentize_py_dir()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        let mut sh = Command::new("sh");
        sh.arg("build.sh").env("PATH", path);
        sh
    } else {
        let mut cargo = cargo();
        cargo
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", &target);
        cargo
    };
    let out = command.current_dir(dir).output().expect("run the build");
    assert!(
        out.status.success(),
        "{} does not build:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    if lang != "rust" {
        dir.join(format!("{name}.wasm"))
    } else {
        target
            .join("wasm32-wasip2/release")
            .join(format!("{name}.wasm"))
    }
}

/// `switchyard plugin test` on the project's own `input.json`, which must
/// pass; returns the report. The call deadline is raised from the proxy's
/// 100 ms: these tests run beside builds of other projects, and a starved
/// interpreter's first call must not read as the example failing to act.
fn test_on_its_input(wasm: &Path, dir: &Path) -> serde_json::Value {
    let (code, out, err) = run_cli(&[
        "plugin",
        "test",
        &wasm.display().to_string(),
        "--input",
        &dir.join("input.json").display().to_string(),
        "--timeout",
        "10s",
    ]);
    assert_eq!(code, 0, "{}: {err}\n{out}", dir.display());
    serde_json::from_str(&out).unwrap()
}

fn new_project(parent: &Path, kind: &str, lang: &str, name: &str) -> PathBuf {
    let dir = parent.join(name);
    let (code, out, err) = run_cli(&[
        "plugin",
        "new",
        "--kind",
        kind,
        "--lang",
        lang,
        &dir.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("next: cd "), "{out}");
    dir
}

/// Every kind's project, in each language, builds, acts on its own input
/// as its `expect` block says, and is loaded by its own config.
fn each_kind_builds_acts_and_loads(lang: &str) {
    let parent = tempfile::tempdir().unwrap();
    for kind in ["alert-rule", "optimizer", "operation-generator"] {
        let dir = new_project(parent.path(), kind, lang, &format!("new-{kind}"));
        let built = build(&dir, lang);
        // Where the project's own config looks for it.
        let wasm = if lang == "rust" {
            dir.join("target/wasm32-wasip2/release")
                .join(built.file_name().unwrap())
        } else {
            built.clone()
        };
        std::fs::create_dir_all(wasm.parent().unwrap()).unwrap();
        if wasm != built {
            std::fs::copy(&built, &wasm).unwrap();
        }

        let report = test_on_its_input(&wasm, &dir);
        assert_eq!(report["kind"], kind);
        assert_eq!(report["expect"]["passed"], true, "{kind}: {report}");

        let (code, out, err) = run_cli(&[
            "check",
            "--config",
            &dir.join("switchyard.toml").display().to_string(),
        ]);
        assert_eq!(code, 0, "{kind}: {err}");
        assert!(
            out.contains(&format!("plugin new-{kind}: {kind}")),
            "{kind}: {out}"
        );
    }
    if lang != "rust" {
        return;
    }
    // Never written over an existing project.
    let (code, _, err) = run_cli(&[
        "plugin",
        "new",
        "--kind",
        "optimizer",
        &parent.path().join("new-optimizer").display().to_string(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("already exists and is not empty"), "{err}");
}

#[test]
fn each_kind_of_rust_project_builds_acts_and_loads() {
    each_kind_builds_acts_and_loads("rust");
}

#[test]
fn each_kind_of_python_project_builds_acts_and_loads() {
    each_kind_builds_acts_and_loads("python");
}

#[test]
fn each_kind_of_js_project_builds_acts_and_loads() {
    each_kind_builds_acts_and_loads("js");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_js_rule_fires_in_a_live_proxy_and_its_edit_is_swapped_in() {
    live_rule_and_swap(
        "js",
        "app.js",
        "const bound = config.max_p99_ms;",
        "const bound = config.max_p99_ms * 100;",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_rust_rule_fires_in_a_live_proxy_and_its_edit_is_swapped_in() {
    live_rule_and_swap(
        "rust",
        "src/lib.rs",
        "let max = self.0.max_p99_ms as f64;",
        "let max = self.0.max_p99_ms as f64 * 100.0;",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_python_rule_fires_in_a_live_proxy_and_its_edit_is_swapped_in() {
    live_rule_and_swap(
        "python",
        "app.py",
        "bound = float(CONFIG[\"max_p99_ms\"])",
        "bound = float(CONFIG[\"max_p99_ms\"]) * 100",
    )
    .await;
}

/// From an empty folder to a plugin swapped in a running proxy: the
/// scaffolded rule fires on a slow backend; its bound raised in the
/// source (`edit_from` → `edit_to` in `source`) and rebuilt, the new
/// version is swapped in and the alert resolves. Deadlines allow for a
/// Python component's compile on a loaded machine.
async fn live_rule_and_swap(lang: &str, source: &str, edit_from: &str, edit_to: &str) {
    let parent = tempfile::tempdir().unwrap();
    let dir = new_project(parent.path(), "alert-rule", lang, "slow-p99");
    let built = build(&dir, lang);
    let live = parent.path().join("slow_p99.wasm");
    std::fs::copy(&built, &live).unwrap();
    // As the README goes: try it first. This also leaves its compilation
    // in the compile cache the proxy shares, so the proxy starts at once.
    test_on_its_input(&live, &dir);

    let b = TestBackend::start("b").await;
    b.set_latency(60);
    let proxy = Proxy::start(&format!(
        "{}[alerts]\ninterval = \"100ms\"\n[alerts.rules.slow-p99]\nfor = \"0s\"\nkeep_firing_for = \"0s\"\n\
         [plugin_runtime]\ndebounce = \"50ms\"\n\
         [[plugins]]\nname = \"slow-p99\"\nkind = \"alert-rule\"\npath = \"{}\"\n\
         config = {{ max_p99_ms = 20, min_requests = 5 }}\nlimits = {{ timeout = \"5s\" }}\n",
        config(&format!("[upstreams.app]\n{}\n", backends_toml(&[&b], &[]))),
        live.display()
    ));
    let url = proxy.url("/slow");
    let traffic = tokio::spawn(async move {
        loop {
            let _ = crate::support::get(&url).await;
        }
    });
    let alert = eventually(Duration::from_secs(120), "the new rule fires", || {
        firing(&proxy)
    })
    .await;
    assert_eq!(alert["key"], "p99", "{alert}");
    assert!(alert["value"].as_f64().unwrap() >= 20.0, "{alert}");

    // The author changes the rule: the bound it reads is doubled, far
    // above the backend's 60 ms. Rebuilt and dropped in, it is swapped in
    // and the alert resolves.
    let source = dir.join(source);
    let text = std::fs::read_to_string(&source).unwrap();
    let edited = text.replace(edit_from, edit_to);
    assert_ne!(text, edited, "the line to edit is in the scaffold");
    std::fs::write(&source, edited).unwrap();
    replace_file(&build(&dir, lang), &live);
    eventually(
        Duration::from_secs(120),
        "the edit is swapped in",
        || async {
            let v = proxy.admin_json("/admin/plugins").await;
            let p = v
                .as_array()?
                .iter()
                .find(|p| p["name"] == "slow-p99")?
                .clone();
            (p["swaps"] == 1).then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(60), "the alert resolves", || async {
        firing(&proxy).await.is_none().then_some(())
    })
    .await;
    traffic.abort();
}

async fn firing(proxy: &Proxy) -> Option<serde_json::Value> {
    let v = proxy.admin_json("/admin/alerts").await;
    v["active"].as_array().and_then(|a| {
        a.iter()
            .find(|a| a["rule"] == "slow-p99" && a["key"] == "p99" && a["state"] == "firing")
            .cloned()
    })
}

/// The SDK builds wherever it is copied: it carries the contract, which
/// never differs from the repository's, and `cargo package` accepts it.
#[test]
fn the_sdk_carries_the_contract_and_packages() {
    let repo = Path::new(REPO);
    let ours = std::fs::read_to_string(repo.join("wit/plugins.wit")).unwrap();
    let sdk = std::fs::read_to_string(repo.join("plugins/sdk/wit/plugins.wit")).unwrap();
    assert!(
        ours == sdk,
        "plugins/sdk/wit/plugins.wit differs from wit/plugins.wit: copy it over"
    );
    let out = cargo()
        .args([
            "package",
            "-p",
            "switchyard-sdk",
            "--allow-dirty",
            "--target",
            "wasm32-wasip2",
        ])
        .current_dir(repo.join("plugins"))
        .output()
        .expect("run cargo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo package failed:\n{err}");
    assert!(err.contains("Packaged"), "{err}");
}
