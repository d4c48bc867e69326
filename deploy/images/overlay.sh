# Sourced by deploy/images/build and build-offline: writes the kustomize overlay that installs the
# control plane with images REGISTRY/<name>:TAG, so that `kubectl apply -k <dir>` is the install.
# write_overlay DIR REGISTRY TAG
write_overlay() {
    local dir="$1" registry="$2" tag="$3" repo rel name
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    mkdir -p "$dir"
    rel="$(realpath --relative-to="$dir" "$repo/deploy/manifests")"
    {
        echo "# Written by deploy/images/build(-offline): Weft's control plane with images from"
        echo "# $registry, tag $tag. Install: kubectl apply -k $dir"
        echo "apiVersion: kustomize.config.k8s.io/v1beta1"
        echo "kind: Kustomization"
        echo "resources:"
        echo "  - $rel"
        echo "images:"
        for name in weft-proxy weft-identity weft-discovery weft-injector; do
            echo "  - name: ghcr.io/weft-mesh/$name"
            echo "    newName: $registry/$name"
            echo "    newTag: \"$tag\""
        done
    } > "$dir/kustomization.yaml"
    echo "wrote $dir/kustomization.yaml: kubectl apply -k $dir"
}
