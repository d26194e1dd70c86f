"""The check modules; importing this package registers every check in the catalogue."""

from conformance.checks import l1_data, l2_read, l3_write, l4_notify, l5_history, l6_tenancy, quality

__all__ = ["l1_data", "l2_read", "l3_write", "l4_notify", "l5_history", "l6_tenancy", "quality"]
