"""Deployment: canary analysis, the local controller and its Envoy proxy, the Kubernetes target."""
