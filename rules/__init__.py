"""reshaper's rule language: configuration, compiler, program format, C engine."""
