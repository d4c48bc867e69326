//! Renders `SETTINGS` as the README's annotation table, so the docs cannot drift from the code.

use crate::{ANNOTATION_PREFIX, SETTINGS, Setting, Target};

/// A Markdown table: annotation, what it sets, default, example, summary.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| annotation | what it sets | default | example | summary |\n|---|---|---|---|---|\n",
    );
    for setting in SETTINGS {
        out.push_str(&format!(
            "| `{ANNOTATION_PREFIX}{}` | {} | {} | `{}` | {} |\n",
            setting.annotation,
            escape(&what_it_sets(setting)),
            escape(&default_cell(setting)),
            escape(setting.example),
            escape(setting.summary),
        ));
    }
    out
}

fn what_it_sets(setting: &Setting) -> String {
    match setting.target {
        Target::ProxyEnv(name) => format!("proxy env `{name}`"),
        Target::InitArg(flag) => format!("`weft-proxy init {flag}`"),
        Target::ProxyResource { bound, resource } => {
            format!("proxy container `resources.{}.{resource}`", bound.field())
        }
        Target::ProxyImage => "image of `weft-proxy` and `weft-init`".to_owned(),
        Target::Inject => "injection (`enabled` / `disabled`)".to_owned(),
        Target::NativeSidecar => "where `weft-proxy` runs (init container or container)".to_owned(),
    }
}

fn default_cell(setting: &Setting) -> String {
    match setting.default {
        None => "—".to_owned(),
        Some("") => "(none)".to_owned(),
        Some(value) => format!("`{value}`"),
    }
}

/// A literal '|' would end the table cell.
fn escape(cell: &str) -> String {
    cell.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_setting_plus_header() {
        let table = markdown_table();
        assert_eq!(table.lines().count(), SETTINGS.len() + 2);
        for setting in SETTINGS {
            assert!(
                table.contains(&format!("`weft.io/{}`", setting.annotation)),
                "{}",
                setting.annotation
            );
        }
    }

    #[test]
    fn every_row_has_five_cells() {
        for line in markdown_table().lines() {
            let unescaped_pipes = line.matches('|').count() - line.matches("\\|").count();
            assert_eq!(unescaped_pipes, 6, "{line}");
        }
    }

    #[test]
    fn rows_show_target_and_default() {
        let table = markdown_table();
        assert!(table.contains(
            "| `weft.io/opaque-ports` | proxy env `WEFT_OPAQUE_PORTS` | `25,587,3306,4444,5432,6379,9300,11211` |"
        ));
        assert!(table.contains(
            "| `weft.io/skip-outbound-ports` | `weft-proxy init --skip-outbound-ports` | (none) |"
        ));
        assert!(table.contains(
            "| `weft.io/proxy-cpu-limit` | proxy container `resources.limits.cpu` | — |"
        ));
    }

    #[test]
    fn escapes_pipes() {
        assert_eq!(escape("a|b"), "a\\|b");
    }
}
