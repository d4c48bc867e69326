use super::*;

fn shop() -> (Index, Vec<Problem>) {
    let objects = ClusterObjects::from_yaml(include_str!("../../testdata/shop.yaml")).unwrap();
    Index::build(&objects, &IndexConfig::default())
}

fn target(s: &str) -> Target {
    s.parse().unwrap()
}

#[test]
fn cluster_ip_resolves_to_the_service_port_with_ready_endpoints_only() {
    let (index, _) = shop();
    let web = index.lookup(&target("10.96.0.10:80"), "elsewhere").unwrap();
    assert_eq!(
        web.service,
        v1::Service {
            name: "web".into(),
            namespace: "shop".into(),
            port: 80,
            port_name: "http".into()
        }
    );
    let addrs: Vec<&str> = web.endpoints.keys().map(String::as_str).collect();
    assert_eq!(
        addrs,
        ["10.244.1.5:8080", "10.244.2.7:8080"],
        "the not-ready endpoint is left out"
    );
    assert_eq!(web.policy.timeout_ms, Some(2000));
}

#[test]
fn meshed_pods_carry_identity_and_proxy_port_unmeshed_do_not() {
    let (index, _) = shop();
    let web = index.lookup(&target("10.96.0.10:80"), "").unwrap();
    assert_eq!(
        web.endpoints["10.244.1.5:8080"],
        v1::Endpoint {
            addr: "10.244.1.5:8080".into(),
            weight: 1,
            zone: "zone-a".into(),
            identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
            meshed: true,
            proxy_port: 4143,
            pod: "web-5d9c7-abcde".into(),
        }
    );
    let legacy = &web.endpoints["10.244.2.7:8080"];
    assert!(!legacy.meshed);
    assert_eq!((legacy.identity.as_str(), legacy.proxy_port), ("", 0));
    assert_eq!(legacy.pod, "web-legacy-0");
}

#[test]
fn each_service_port_gets_its_own_endpoint_port_by_name() {
    let (index, _) = shop();
    let metrics = index.lookup(&target("10.96.0.10:9090"), "").unwrap();
    assert_eq!(metrics.service.port_name, "metrics");
    let addrs: Vec<&str> = metrics.endpoints.keys().map(String::as_str).collect();
    assert_eq!(addrs, ["10.244.1.5:9100", "10.244.2.7:9100"]);
    assert!(
        index.lookup(&target("10.96.0.10:81"), "").is_none(),
        "no such Service port"
    );
}

#[test]
fn every_spelling_of_the_name_resolves() {
    let (index, _) = shop();
    for (name, client_ns) in [
        ("web.shop.svc.cluster.local:80", "other"),
        ("web.shop.svc:80", "other"),
        ("web.shop:80", "other"),
        ("web:80", "shop"),
        ("WEB.shop.svc.cluster.local.:80", ""),
    ] {
        let found = index.lookup(&target(name), client_ns);
        assert_eq!(
            found.map(|s| s.service.name.clone()).as_deref(),
            Some("web"),
            "{name} from {client_ns:?}"
        );
    }
    for (name, client_ns) in [
        ("web:80", "other"),
        ("web:80", ""),
        ("web.shop.svc.other.domain:80", ""),
        ("web.shop.pod:80", ""),
        ("example.com:80", ""),
    ] {
        assert!(
            index.lookup(&target(name), client_ns).is_none(),
            "{name} from {client_ns:?}"
        );
    }
}

#[test]
fn a_ready_pod_ip_resolves_to_its_service_a_not_ready_one_does_not() {
    let (index, _) = shop();
    let found = index.lookup(&target("10.244.1.5:8080"), "").unwrap();
    assert_eq!(
        (found.service.name.as_str(), found.service.port),
        ("web", 80)
    );
    assert_eq!(
        index
            .lookup(&target("10.244.1.5:9100"), "")
            .unwrap()
            .service
            .port,
        9090
    );
    assert!(index.lookup(&target("10.244.2.9:8080"), "").is_none());
    assert!(index.lookup(&target("10.244.1.5:1234"), "").is_none());
}

#[test]
fn headless_services_resolve_by_name_and_pod_ip() {
    let (index, _) = shop();
    let db = index.lookup(&target("db.shop:5432"), "").unwrap();
    assert_eq!(db.endpoints.keys().collect::<Vec<_>>(), ["10.244.1.8:5432"]);
    assert_eq!(
        db.endpoints["10.244.1.8:5432"].identity,
        "spiffe://cluster.local/ns/shop/sa/db"
    );
    assert!(index.lookup(&target("10.244.1.8:5432"), "").is_some());
}

#[test]
fn external_name_services_are_not_in_the_mesh() {
    let (index, _) = shop();
    assert!(index.lookup(&target("payments.shop:443"), "").is_none());
}

#[test]
fn bad_objects_are_reported_by_kind_and_name_and_the_rest_served() {
    let (index, problems) = shop();
    let described: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let has = |needle: &str| described.iter().any(|p| p.contains(needle));
    assert!(
        has("Service shop/cart: annotation weft.io/retry-attempts"),
        "{described:#?}"
    );
    assert!(
        has("EndpointSlice shop/cart-fqdn: addressType \"FQDN\""),
        "{described:#?}"
    );
    assert!(
        has("EndpointSlice shop/orphan: has no kubernetes.io/service-name label"),
        "{described:#?}"
    );
    assert_eq!(problems.len(), 3, "{described:#?}");
    let cart = index.lookup(&target("10.96.0.20:8080"), "").unwrap();
    assert!(cart.endpoints.is_empty());
    assert_eq!(cart.policy.limits.and_then(|l| l.max_in_flight), Some(50));
    assert_eq!(cart.policy.retry, None);
}

#[test]
fn an_endpoint_whose_pod_is_unknown_waits() {
    let mut objects = ClusterObjects::from_yaml(include_str!("../../testdata/shop.yaml")).unwrap();
    objects.pods.remove(&ObjectKey::new("shop", "web-legacy-0"));
    let (index, problems) = Index::build(&objects, &IndexConfig::default());
    let web = index.lookup(&target("10.96.0.10:80"), "").unwrap();
    assert_eq!(
        web.endpoints.keys().collect::<Vec<_>>(),
        ["10.244.1.5:8080"]
    );
    assert!(
        problems
            .iter()
            .any(|p| p.reason.contains("shop/web-legacy-0 is unknown"))
    );
}

#[test]
fn the_trust_domain_shapes_identities() {
    let objects = ClusterObjects::from_yaml(include_str!("../../testdata/shop.yaml")).unwrap();
    let config = IndexConfig {
        trust_domain: "prod.example".into(),
        cluster_domain: "k8s.internal".into(),
    };
    let (index, _) = Index::build(&objects, &config);
    let web = index
        .lookup(&target("web.shop.svc.k8s.internal:80"), "")
        .unwrap();
    assert_eq!(
        web.endpoints["10.244.1.5:8080"].identity,
        "spiffe://prod.example/ns/shop/sa/web"
    );
}
