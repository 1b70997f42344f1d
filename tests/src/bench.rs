//! What every `harness = false` benchmark needs.

/// True when cargo only asks the benchmark to list itself (`cargo test --benches` passes
/// `--list`): there is nothing to list, and nothing should run.
pub fn listing_only() -> bool {
    std::env::args().any(|a| a == "--list")
}

/// Environment variable `name` parsed as a `T`, or `default` when it is unset or malformed.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
