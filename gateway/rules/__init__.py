"""Rules and interventions: conditions over published entities open Alerts and call maintenance systems."""
