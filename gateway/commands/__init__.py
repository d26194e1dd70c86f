"""Built-in ``jonction`` commands, one module each, each with ``register(subparsers)``."""
