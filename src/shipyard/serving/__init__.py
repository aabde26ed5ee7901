"""The prediction service: spec, request schema, prediction log, HTTP guard, BentoML service."""
