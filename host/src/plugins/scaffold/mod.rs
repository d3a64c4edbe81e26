//! `switchyard plugin new`: writes a plugin project that builds as it is,
//! so a new author starts from working code rather than from the WIT.
//!
//! A project holds the plugin's source (an example of its kind that does
//! something visible), an `input.json` that makes the example act under
//! `switchyard plugin test` and says so in an `expect` block, a minimal
//! `switchyard.toml` that loads it, and a short README with the commands.
//!
//! Rust projects carry the SDK in `switchyard-sdk/`: the same files as the
//! repository's `plugins/sdk`, built into this binary, so the project
//! builds without this repository and against the contract this binary
//! loads. Replacing the path dependency with a git or registry one is a
//! one-line change the project's `Cargo.toml` shows.
//!
//! Python projects carry the contract (`wit/plugins.wit`) and the Python
//! SDK (`switchyard_sdk.py`, from `plugins/sdk-python`), and build with
//! componentize-py through `build.sh`, which renames the component into
//! place so a running proxy never reads half a file.
//!
//! JavaScript projects carry the contract and the JavaScript SDK
//! (`switchyard_sdk.js`, from `plugins/sdk-js`), a `package.json` naming
//! the componentize-js release, and a `build.mjs` that calls its Node API
//! (its CLI cannot take a WIT folder) with the `http` features off, and
//! renames the component into place the same way.

use std::path::{Path, PathBuf};

use crate::config::PluginKind;

/// Languages a project can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The SDK's files, as `plugins/sdk` holds them.
const SDK_FILES: [(&str, &str); 6] = [
    (
        "Cargo.toml",
        include_str!("../../../../plugins/sdk/Cargo.toml"),
    ),
    (
        "README.md",
        include_str!("../../../../plugins/sdk/README.md"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "src/rng.rs",
        include_str!("../../../../plugins/sdk/src/rng.rs"),
    ),
    (
        "src/snapshot.rs",
        include_str!("../../../../plugins/sdk/src/snapshot.rs"),
    ),
    ("wit/plugins.wit", WIT),
];

/// Writes a new project for a plugin of `kind` in `lang` into `dir`, which
/// must not exist or be empty; its last component names the plugin.
/// Returns the files written, relative to `dir`.
pub fn create(kind: PluginKind, lang: Lang, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a directory name", dir.display()))?;
    check_name(name)?;
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).map_err(|e| format!("{}: cannot read: {e}", dir.display()))?;
        if entries.next().is_some() {
            return Err(format!(
                "{}: already exists and is not empty; choose a new directory",
                dir.display()
            ));
        }
    }
    let files = project(kind, lang, name);
    for (path, text) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&full, text).map_err(|e| format!("cannot write {}: {e}", full.display()))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// A plugin name is also a crate name: a letter, then letters, digits, `-`
/// or `_`.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "invalid plugin name \"{name}\": start with a letter, then letters, digits, '-' or '_'"
        ))
    }
}

/// What differs between kinds, whatever the language: the example's
/// config, the input that makes it act, and how to watch it in a proxy.
/// Each language's example does the same, so the input is shared.
struct Example {
    /// The contract's world, as componentize-py names it.
    world: &'static str,
    /// The `config` value of the `[[plugins]]` entry (TOML).
    config_toml: &'static str,
    input: &'static str,
    /// The config section that makes the proxy call it every second.
    loop_section: &'static str,
    what: &'static str,
    /// A command that shows it at work; `WASM` stands for the component.
    watch: &'static str,
}

fn example(kind: PluginKind) -> Example {
    match kind {
        PluginKind::AlertRule => Example {
            world: "alert-rule",
            config_toml: "{ max_p99_ms = 250, min_requests = 20 }",
            input: r#"{
  "config": {"max_p99_ms": 250, "min_requests": 20},
  "snapshot": {"current": {"window_ms": 10000, "requests": 500, "p99_us": 900000}},
  "expect": {"findings": [{"key": "p99", "active": true, "severity": "high"}]}
}
"#,
            loop_section: "[alerts]\ninterval = \"1s\"\n",
            what: "an alert rule that fires while the p99 latency stays above `max_p99_ms` for 10 s",
            watch: "curl -s 127.0.0.1:9090/admin/alerts",
        },
        PluginKind::Optimizer => Example {
            world: "optimizer",
            config_toml: "{ target_p99_ms = 100, min_limit = 10, max_limit = 1000 }",
            input: r#"{
  "config": {"target_p99_ms": 100, "min_limit": 10, "max_limit": 1000},
  "snapshot": {"current": {"window_ms": 10000, "requests": 500, "p99_us": 400000},
               "concurrency_limit": 200},
  "expect": {"adjustments": [{"knob": "concurrency_limit", "value": 180}]}
}
"#,
            loop_section: "[optimizer]\ninterval = \"1s\"\n",
            what: "an optimizer that lowers the concurrency limit by a tenth while the p99 latency is above `target_p99_ms`, and raises it by 10 otherwise",
            watch: "curl -s 127.0.0.1:9090/admin/optimizer",
        },
        PluginKind::OperationGenerator => Example {
            world: "operation-generator",
            config_toml: "{ resource = \"/items\", write_share = 0.2 }",
            input: r#"{
  "config": {"resource": "/items", "write_share": 0.2},
  "seed": 1, "batches": 2, "batch_size": 10,
  "expect": {"operations": [{"kind": "create", "method": "POST", "path": "/items"},
                            {"kind": "read", "method": "GET"}]}
}
"#,
            loop_section: "",
            what: "an operation generator that creates items with POST and reads back the ones it created",
            watch: "switchyard bench http://127.0.0.1:8080 --plugin WASM --generator-config '{\"resource\": \"/items\"}' -c 8 -d 10s",
        },
    }
}

/// The one of `[alert rule, optimizer, generator]` for `kind`.
fn by_kind(kind: PluginKind, [alert, optimizer, generator]: [&'static str; 3]) -> &'static str {
    match kind {
        PluginKind::AlertRule => alert,
        PluginKind::Optimizer => optimizer,
        PluginKind::OperationGenerator => generator,
    }
}

/// What differs between languages: the files, where the build puts the
/// component, and the commands that build it.
struct Project {
    files: Vec<(PathBuf, String)>,
    /// The component, relative to the project.
    artifact: String,
    /// Shell lines that build it (one-time setup first).
    build: String,
}

fn project(kind: PluginKind, lang: Lang, name: &str) -> Vec<(PathBuf, String)> {
    let ex = example(kind);
    let stem = name.replace('-', "_");
    let mut p = match lang {
        Lang::Rust => rust_project(kind, name, &stem),
        Lang::Python => python_project(kind, name, &stem, &ex),
        Lang::Js => js_project(kind, name, &stem, &ex),
    };
    let config = format!(
        r#"# A minimal proxy that loads the plugin:
#   switchyard run --config switchyard.toml
# It proxies 127.0.0.1:8080 to a backend at 127.0.0.1:3000 and serves the
# admin API on 127.0.0.1:9090. Rebuilding the plugin swaps it in live.
[listen]
address = "127.0.0.1:8080"

[admin]
address = "127.0.0.1:9090"

[[routes]]
upstream = "app"

[upstreams.app]
backends = [{{ address = "127.0.0.1:3000" }}]

{loop_section}
[[plugins]]
name = "{name}"
kind = "{kind}"
path = "{artifact}"
config = {config_toml}
"#,
        loop_section = ex.loop_section,
        kind = kind.as_str(),
        artifact = p.artifact,
        config_toml = ex.config_toml,
    );
    let readme = format!(
        r#"# {name}

A Switchyard plugin: {what}.

```sh
{build}
switchyard plugin test {artifact} --input input.json
switchyard run --config switchyard.toml   # loads it; rebuild to swap it live
{watch}
```

`plugin test` runs the plugin on `input.json` and exits 1 when the output
lacks what the input's `expect` block names. Every record field is
documented in the contract, `{wit}`.
"#,
        what = ex.what,
        build = p.build,
        artifact = p.artifact,
        watch = ex.watch.replace("WASM", &p.artifact),
        wit = match lang {
            Lang::Rust => "switchyard-sdk/wit/plugins.wit",
            Lang::Python | Lang::Js => "wit/plugins.wit",
        },
    );
    p.files
        .push((PathBuf::from("input.json"), ex.input.to_string()));
    p.files.push((PathBuf::from("switchyard.toml"), config));
    p.files.push((PathBuf::from("README.md"), readme));
    p.files
}

fn rust_project(kind: PluginKind, name: &str, stem: &str) -> Project {
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
# The SDK, written here by `switchyard plugin new` for contract 0.2.0. To
# take it from a Switchyard repository instead, replace the line with
#   switchyard-sdk = {{ git = "URL of the repository" }}
switchyard-sdk = {{ path = "switchyard-sdk" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true

# A project of its own, even when created inside another Cargo workspace.
[workspace]
"#
    );
    let source = by_kind(
        kind,
        [
            include_str!("rust/alert_rule.rs"),
            include_str!("rust/optimizer.rs"),
            include_str!("rust/generator.rs"),
        ],
    );
    let mut files = vec![
        (PathBuf::from("Cargo.toml"), cargo),
        (
            PathBuf::from("src/lib.rs"),
            source.replace("PLUGIN_NAME", name),
        ),
        (PathBuf::from(".gitignore"), "/target\n".to_string()),
    ];
    files.extend(
        SDK_FILES
            .iter()
            .map(|(path, text)| (Path::new("switchyard-sdk").join(path), (*text).to_string())),
    );
    Project {
        files,
        artifact: format!("target/wasm32-wasip2/release/{stem}.wasm"),
        build: "rustup target add wasm32-wasip2            # once\n\
                cargo build --release --target wasm32-wasip2"
            .into(),
    }
}

/// The componentize-py release the projects are built and tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

fn python_project(kind: PluginKind, name: &str, stem: &str, ex: &Example) -> Project {
    let source = by_kind(
        kind,
        [
            include_str!("python/alert_rule.py"),
            include_str!("python/optimizer.py"),
            include_str!("python/generator.py"),
        ],
    );
    let artifact = format!("{stem}.wasm");
    let build_sh = format!(
        r#"#!/bin/sh
# Builds {artifact} from app.py, against the contract in wit/.
# Needs componentize-py: pip install componentize-py=={COMPONENTIZE_PY}
set -e
cd "$(dirname "$0")"
componentize-py -d wit -w {world} componentize app -o {artifact}.incoming
# Renamed into place, so a running proxy never reads half a file.
mv {artifact}.incoming {artifact}
"#,
        world = ex.world,
    );
    Project {
        files: interpreted_files(
            ("app.py", source.replace("PLUGIN_NAME", name)),
            (
                "switchyard_sdk.py",
                include_str!("../../../../plugins/sdk-python/switchyard_sdk.py"),
            ),
            vec![("build.sh", build_sh)],
            "*.wasm\n*.incoming\n__pycache__/\n",
        ),
        build: format!("pip install componentize-py=={COMPONENTIZE_PY}   # once\nsh build.sh"),
        artifact,
    }
}

/// The files of a project in a language whose component carries an
/// interpreter: the plugin's source, the SDK module beside it, the contract
/// in `wit/`, what builds it, and a `.gitignore`.
fn interpreted_files(
    (app, source): (&str, String),
    (sdk, sdk_text): (&str, &str),
    build: Vec<(&str, String)>,
    gitignore: &str,
) -> Vec<(PathBuf, String)> {
    let mut files = vec![
        (PathBuf::from(app), source),
        (PathBuf::from(sdk), sdk_text.to_string()),
        (PathBuf::from("wit/plugins.wit"), WIT.to_string()),
    ];
    files.extend(build.into_iter().map(|(p, t)| (PathBuf::from(p), t)));
    files.push((PathBuf::from(".gitignore"), gitignore.to_string()));
    files
}

/// The contract, as the SDK carries it.
const WIT: &str = include_str!("../../../../plugins/sdk/wit/plugins.wit");

/// The componentize-js release the projects are built and tested with.
pub const COMPONENTIZE_JS: &str = "0.23.0";

fn js_project(kind: PluginKind, name: &str, stem: &str, ex: &Example) -> Project {
    let source = by_kind(
        kind,
        [
            include_str!("js/alert_rule.js"),
            include_str!("js/optimizer.js"),
            include_str!("js/generator.js"),
        ],
    );
    let artifact = format!("{stem}.wasm");
    let package = format!(
        r#"{{
  "name": "{npm_name}",
  "private": true,
  "type": "module",
  "scripts": {{ "build": "node build.mjs" }},
  "devDependencies": {{ "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS}" }}
}}
"#,
        npm_name = name.to_ascii_lowercase(),
    );
    let build = include_str!("js/build.mjs")
        .replace("WORLD", ex.world)
        .replace("ARTIFACT", &artifact);
    Project {
        files: interpreted_files(
            ("app.js", source.replace("PLUGIN_NAME", name)),
            (
                "switchyard_sdk.js",
                include_str!("../../../../plugins/sdk-js/switchyard_sdk.js"),
            ),
            vec![("package.json", package), ("build.mjs", build)],
            "node_modules/\n*.wasm\n*.incoming\n",
        ),
        build: "npm install      # once\nnpm run build".into(),
        artifact,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_crate_names() {
        assert!(check_name("my-rule_2").is_ok());
        for bad in ["", "2fast", "-x", "a b", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    /// The test suite builds the projects with the releases they name.
    #[test]
    fn install_deps_installs_the_releases_projects_name() {
        let script = include_str!("../../../../tests/install-deps.sh");
        assert!(script.contains(&format!("COMPONENTIZE_PY={COMPONENTIZE_PY}\n")));
        assert!(script.contains(&format!("COMPONENTIZE_JS={COMPONENTIZE_JS}\n")));
    }

    #[test]
    fn a_javascript_project_names_its_world_and_component() {
        let files = project(PluginKind::Optimizer, Lang::Js, "Tuner");
        let text = |name: &str| {
            files
                .iter()
                .find(|(p, _)| p == Path::new(name))
                .map(|(_, t)| t.clone())
                .unwrap_or_default()
        };
        assert!(text("build.mjs").contains("worldName: 'optimizer'"));
        assert!(text("build.mjs").contains("rename('Tuner.wasm.incoming', 'Tuner.wasm')"));
        assert!(text("package.json").contains("\"name\": \"tuner\""));
        assert!(text("switchyard.toml").contains("path = \"Tuner.wasm\""));
        assert!(text("app.js").contains("export const optimize"));
    }

    #[test]
    fn a_project_is_written_once_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let project = dir.path().join("my-rule");
        let files =
            create(PluginKind::AlertRule, Lang::Rust, &project).unwrap_or_else(|e| panic!("{e}"));
        assert!(files.contains(&PathBuf::from("switchyard-sdk/wit/plugins.wit")));
        let config = std::fs::read_to_string(project.join("switchyard.toml")).unwrap_or_default();
        assert!(
            config.contains("path = \"target/wasm32-wasip2/release/my_rule.wasm\""),
            "{config}"
        );
        let err = create(PluginKind::AlertRule, Lang::Rust, &project).expect_err("not empty");
        assert!(
            err.ends_with("already exists and is not empty; choose a new directory"),
            "{err}"
        );
    }
}
