//! End-to-end suites live in `tests/`; benchmarks in `benches/`.
