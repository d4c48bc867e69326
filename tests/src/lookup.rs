//! Finding a pod the way users name one: exact name (or `name.namespace`), a controller's name
//! (its first pod), or a prefix matching exactly one pod. Shared by the library and the CLI.

use crate::error::TestbedError;

/// What lookup needs to know of a pod.
pub trait PodKey {
    fn pod_name(&self) -> &str;
    fn pod_namespace(&self) -> &str;
    fn pod_owner(&self) -> Option<&str>;
}

pub fn find_pod<'a, T: PodKey>(pods: &'a [T], query: &str) -> Result<&'a T, TestbedError> {
    let qualified = |p: &T| format!("{}.{}", p.pod_name(), p.pod_namespace()) == query;
    if let Some(p) = pods.iter().find(|p| p.pod_name() == query || qualified(p)) {
        return Ok(p);
    }
    if let Some(p) = pods.iter().find(|p| p.pod_owner() == Some(query)) {
        return Ok(p);
    }
    let matches: Vec<&T> = pods
        .iter()
        .filter(|p| p.pod_name().starts_with(query))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(TestbedError::NoSuchPod(query.to_string())),
        many => Err(TestbedError::AmbiguousPod {
            query: query.to_string(),
            candidates: many
                .iter()
                .map(|p| p.pod_name())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct P(&'static str, &'static str, Option<&'static str>);

    impl PodKey for P {
        fn pod_name(&self) -> &str {
            self.0
        }
        fn pod_namespace(&self) -> &str {
            self.1
        }
        fn pod_owner(&self) -> Option<&str> {
            self.2
        }
    }

    const PODS: [P; 4] = [
        P("catalog-1a2b3c-0", "default", Some("catalog")),
        P("catalog-1a2b3c-1", "default", Some("catalog")),
        P("client", "default", None),
        P("client", "shop", None),
    ];

    #[test]
    fn exact_owner_and_unique_prefix() {
        assert_eq!(
            find_pod(&PODS, "catalog-1a2b3c-1").unwrap().0,
            "catalog-1a2b3c-1"
        );
        assert_eq!(find_pod(&PODS, "catalog").unwrap().0, "catalog-1a2b3c-0");
        assert_eq!(
            find_pod(&PODS, "catalog-1a2b3c-").unwrap_err().to_string(),
            "`catalog-1a2b3c-` matches several pods: catalog-1a2b3c-0, catalog-1a2b3c-1"
        );
        assert_eq!(find_pod(&PODS, "client.shop").unwrap().1, "shop");
        assert_eq!(find_pod(&PODS, "client").unwrap().1, "default");
        assert!(matches!(
            find_pod(&PODS, "nope"),
            Err(TestbedError::NoSuchPod(_))
        ));
    }
}
