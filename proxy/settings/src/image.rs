//! Container image references ("ghcr.io/weft-mesh/weft-proxy:0.1.0", "weft-proxy@sha256:...").

use crate::SettingError;

const EXPECTED: &str = r#"a container image reference such as "ghcr.io/weft-mesh/weft-proxy:0.1.0" ([registry/]path[:tag][@sha256:digest])"#;

/// Checks the reference grammar container runtimes use and returns the value trimmed; a typo here
/// would otherwise only show up as an image pull failure on the node.
pub fn parse_image(s: &str) -> Result<String, SettingError> {
    let err = || SettingError::new(EXPECTED, s);
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(err().because("empty"));
    }
    let (name_and_tag, digest) = match trimmed.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (trimmed, None),
    };
    if let Some(digest) = digest {
        check_digest(digest).map_err(|reason| err().because(reason))?;
    }
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(colon) => {
            let colon = last_slash + colon;
            (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
        }
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        check_tag(tag).map_err(|reason| err().because(reason))?;
    }
    check_name(name).map_err(|reason| err().because(reason))?;
    Ok(trimmed.to_owned())
}

fn check_name(name: &str) -> Result<(), String> {
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components.first().copied().unwrap_or_default();
    // Like the runtimes: a first component with '.' or ':' (or "localhost") names a registry.
    let has_registry = components.len() > 1 && (first.contains(['.', ':']) || first == "localhost");
    if has_registry {
        check_registry(first)?;
        components.remove(0);
    }
    for component in components {
        check_path_component(component)?;
    }
    Ok(())
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("{registry:?} is not a registry host[:port]"))
    }
}

fn check_path_component(component: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{component:?} is not a valid image path component (lowercase letters, digits, '.', '_', '-')"
        )
    };
    let edges_ok = component.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && component.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    let chars_ok = component
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if edges_ok && chars_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = (1..=128).contains(&tag.len())
        && tag.starts_with(word)
        && tag.chars().all(|c| word(c) || matches!(c, '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("{tag:?} is not a valid tag"))
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    let ok = digest.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty()
            && algorithm
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && hex.len() >= 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if ok {
        Ok(())
    } else {
        Err(format!("{digest:?} is not a digest such as sha256:<hex>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_references() {
        for good in [
            "weft-proxy",
            "weft-proxy:dev",
            "ghcr.io/weft-mesh/weft-proxy:0.1.0",
            "localhost:5000/weft-proxy:latest",
            "localhost/weft-proxy",
            "registry.example.com/a/b/c",
            "my_org/weft.proxy__x",
            "ghcr.io/weft-mesh/weft-proxy:v1.2.3-rc.1_x",
        ] {
            assert!(parse_image(good).is_ok(), "{good:?} should be accepted");
        }
        assert!(parse_image(&format!("weft-proxy@{DIGEST}")).is_ok());
        assert!(parse_image(&format!("ghcr.io/weft-mesh/weft-proxy:0.1.0@{DIGEST}")).is_ok());
        assert_eq!(parse_image(" weft-proxy ").unwrap(), "weft-proxy");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Weft-Proxy",
            "weft proxy",
            "weft-proxy:",
            "weft-proxy:-x",
            "weft-proxy@sha256:abc",
            "weft-proxy@",
            "ghcr.io//weft",
            "/weft",
            "weft/",
            "-weft",
            "ghcr.io:port/weft",
            "weft-proxy:a:b",
        ] {
            let e = parse_image(bad).unwrap_err();
            assert_eq!(e.given(), bad);
        }
        assert!(
            parse_image("Weft")
                .unwrap_err()
                .to_string()
                .contains("ghcr.io/weft-mesh/weft-proxy:0.1.0")
        );
    }
}
