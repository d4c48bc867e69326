# Sourced by deploy/images/build and build-offline: writes the kustomize overlays that install
# the control plane with images REGISTRY/<name>:TAG, so `kubectl apply -k DIR` is the install
# (and `kubectl apply -k DIR/observability` the install with Jaeger and the Prometheus config).
# write_overlay DIR REGISTRY TAG
write_overlay() {
    local dir="$1" registry="$2" tag="$3" repo
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    write_kustomization "$dir" "$repo/deploy/manifests" "$registry" "$tag"
    write_kustomization "$dir/observability" "$repo/deploy/manifests/observability" "$registry" "$tag"
    echo "wrote $dir: kubectl apply -k $dir (or -k $dir/observability)"
}

# write_kustomization DIR BASE REGISTRY TAG
write_kustomization() {
    local dir="$1" base="$2" registry="$3" tag="$4" name
    mkdir -p "$dir"
    {
        echo "# Written by deploy/images/build(-offline): ${base#"$repo"/}"
        echo "# with images from $registry, tag $tag. Install: kubectl apply -k $dir"
        echo "apiVersion: kustomize.config.k8s.io/v1beta1"
        echo "kind: Kustomization"
        echo "resources:"
        echo "  - $(realpath --relative-to="$dir" "$base")"
        echo "images:"
        for name in weft-proxy weft-identity weft-discovery weft-injector; do
            echo "  - name: ghcr.io/weft-mesh/$name"
            echo "    newName: $registry/$name"
            echo "    newTag: \"$tag\""
        done
    } > "$dir/kustomization.yaml"
}
