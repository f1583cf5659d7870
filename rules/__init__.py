"""reshaper's rule language: a YAML rule file to a verified program for the C engine.

config.py    load_config, the entry: loader.py (bytes to bounded YAML nodes) -> fields.py
             (the tables of keys; their kinds, kinds.py, parse each value with values.py)
             -> checks.py (combinations, the program's limits) -> compiler.py
model.py     Config and its parts, Diagnostic and ConfigError
schema.py    writes schema.json from the tables (make schema)
binding.py   the engine seen from Python; engine/ is the C, rs_program.h its contract
"""
