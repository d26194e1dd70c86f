"""Offline JSON Schemas and @contexts for the supported Smart Data Models and jonction configs."""
