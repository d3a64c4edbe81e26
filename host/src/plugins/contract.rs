//! The plugin contract check: a component must export the interface of the
//! kind it is configured as, in this contract version, and import nothing
//! the host does not provide. Mismatches are explained by name.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::PluginKind;

pub const PACKAGE: &str = "switchyard:plugins";
/// The contract version new plugins are built against.
pub const VERSION: &str = "0.2.0";
/// Every version the host loads: the current one, then older ones whose
/// values it converts.
pub const SUPPORTED: [&str; 2] = [VERSION, "0.1.0"];

/// The interface a kind's world exports.
pub fn interface(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::OperationGenerator => "generate",
        PluginKind::Optimizer => "optimize",
        PluginKind::AlertRule => "alert",
    }
}

fn kind_of_interface(name: &str) -> Option<PluginKind> {
    [
        PluginKind::OperationGenerator,
        PluginKind::Optimizer,
        PluginKind::AlertRule,
    ]
    .into_iter()
    .find(|k| interface(*k) == name)
}

/// `switchyard:plugins/alert@0.1.0`.
pub fn export_name(kind: PluginKind) -> String {
    format!("{PACKAGE}/{}@{VERSION}", interface(kind))
}

/// Splits `switchyard:plugins/alert@0.2.0` into `("alert", Some("0.2.0"))`.
fn parse_export(name: &str) -> Option<(&str, Option<&str>)> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    Some(match rest.split_once('@') {
        Some((iface, version)) => (iface, Some(version)),
        None => (rest, None),
    })
}

/// The kind a component is, judged from its exports.
pub fn detect(engine: &Engine, component: &Component) -> Result<PluginKind, String> {
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
    for name in &exports {
        if let Some((iface, version)) = parse_export(name)
            && let Some(kind) = kind_of_interface(iface)
        {
            if version.is_some_and(|v| SUPPORTED.contains(&v)) {
                return Ok(kind);
            }
            return Err(version_mismatch(kind, name, version));
        }
    }
    Err(format!(
        "not a Switchyard plugin: it exports none of {}, {} or {} (found: {})",
        export_name(PluginKind::OperationGenerator),
        export_name(PluginKind::Optimizer),
        export_name(PluginKind::AlertRule),
        list(&exports)
    ))
}

fn version_mismatch(kind: PluginKind, found: &str, version: Option<&str>) -> String {
    format!(
        "built for another contract version: exports {found} (world {kind} of {PACKAGE}@{}), \
         but this Switchyard implements {PACKAGE}@{VERSION} (and loads {}) and expects {}",
        version.unwrap_or("unversioned"),
        SUPPORTED[1..].join(", "),
        export_name(kind)
    )
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "no exports".to_string()
    } else {
        names.join(", ")
    }
}

/// Checks that the component is a plugin of `expected` kind and version.
pub fn check(engine: &Engine, component: &Component, expected: PluginKind) -> Result<(), String> {
    match detect(engine, component) {
        Ok(kind) if kind == expected => Ok(()),
        Ok(kind) => Err(format!(
            "wrong kind: configured as kind = \"{expected}\" (expects export {}), but this is an {kind} plugin (exports {})",
            export_name(expected),
            export_name(kind)
        )),
        Err(e) => Err(e),
    }
}

/// Explains an import the host could not satisfy.
pub fn explain_link_error(
    engine: &Engine,
    component: &Component,
    error: &wasmtime::Error,
) -> String {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if let Some((_, Some(version))) = parse_export(name)
            && !SUPPORTED.contains(&version)
        {
            return format!(
                "imports {name}, but this Switchyard provides {PACKAGE}@{VERSION}: rebuild the plugin against this version's SDK"
            );
        }
    }
    format!(
        "imports something Switchyard does not provide (plugins get only the host interface, clocks and random): {error:#}"
    )
}
