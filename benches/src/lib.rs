//! ntd's benchmarks live in `micro/` (cargo bench) and `e2e/` (benches/e2e/run).
