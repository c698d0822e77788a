"""Running TLC on the election spec (``tla/``): ``tlc`` (one TLC run), ``suite`` (``aegis spec``: every model
config, view cross-checks, mutants) and ``trace_check`` (``aegis trace-check``: is a trace a behaviour of the spec)."""
