"""Deployment: canary analysis now; the controller, router and targets build on it."""
