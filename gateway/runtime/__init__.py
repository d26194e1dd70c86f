"""The gateway runtime: config, pipeline, outbox, publisher, sinks, admin API and app factory."""
