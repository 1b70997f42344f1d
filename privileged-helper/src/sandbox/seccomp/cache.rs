//! Each distinct filter compiled once per helper process.
//!
//! The helper compiles a spawn's filter while its floor checks the request (a filter that does
//! not compile is refused there); the supervisor, init and main are forked from the helper
//! without exec, so they find it in their copy of the cache and install it as it is. Filters
//! are keyed by their normalized form, so the same lists in another order share one entry.
//! The cache is bounded: a compromised berthd sending ever new filters costs a recompile, never
//! the helper's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use berth_protocol::sandbox::SyscallFilter;

use super::compile::{CompileError, CompiledFilter, compile};

/// Most filters kept; a host runs a handful of distinct ones (one per profile, and units that
/// tighten theirs).
const CAPACITY: usize = 64;

#[derive(Debug, Default)]
pub struct FilterCache {
    entries: HashMap<SyscallFilter, Entry>,
    // Counts lookups, to find the least recently used entry.
    clock: u64,
    compiled: u64,
}

#[derive(Debug)]
struct Entry {
    filter: Arc<CompiledFilter>,
    used: u64,
}

impl FilterCache {
    /// The helper process's cache.
    pub fn global() -> &'static Mutex<FilterCache> {
        static CACHE: OnceLock<Mutex<FilterCache>> = OnceLock::new();
        CACHE.get_or_init(Mutex::default)
    }

    /// `filter` compiled: from the cache, or compiled now and kept.
    pub fn get(&mut self, filter: &SyscallFilter) -> Result<Arc<CompiledFilter>, CompileError> {
        self.clock += 1;
        let key = normalized(filter);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.used = self.clock;
            return Ok(entry.filter.clone());
        }
        let compiled = Arc::new(compile(&key)?);
        self.compiled += 1;
        // Once per distinct filter, so a log shows that starts do not recompile.
        tracing::info!(
            programs = compiled.programs().len(),
            instructions = compiled.instructions(),
            "compiled a seccomp filter"
        );
        if self.entries.len() >= CAPACITY
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone())
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(
            key,
            Entry {
                filter: compiled.clone(),
                used: self.clock,
            },
        );
        Ok(compiled)
    }

    /// How many filters this cache has compiled so far.
    pub fn compilations(&self) -> u64 {
        self.compiled
    }
}

/// Compiles `filter` through the helper process's cache.
pub fn compiled(filter: &SyscallFilter) -> Result<Arc<CompiledFilter>, CompileError> {
    // A panic while the lock was held cannot leave the map half-updated in a way that matters:
    // at worst an entry is missing and gets compiled again.
    let mut cache = FilterCache::global()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache.get(filter)
}

/// The same filter with every list sorted and without repeats.
pub(crate) fn normalized(filter: &SyscallFilter) -> SyscallFilter {
    fn sorted(list: &[String]) -> Vec<String> {
        let mut list = list.to_vec();
        list.sort_unstable();
        list.dedup();
        list
    }
    let mut out = filter.clone();
    out.allow = filter.allow.as_deref().map(sorted);
    out.deny = sorted(&filter.deny);
    out.architectures = sorted(&filter.architectures);
    out.namespaces_allowed = filter.namespaces_allowed.as_deref().map(sorted);
    if let Some(families) = &mut out.address_families {
        families.families = sorted(&families.families);
    }
    out
}

#[cfg(test)]
mod tests {
    use berth_protocol::sandbox::SandboxSpec;

    use super::*;

    fn deny(names: &[&str]) -> SyscallFilter {
        let mut filter = SandboxSpec::baseline(61200, 61200, "test").syscalls;
        filter.deny = names.iter().map(|s| s.to_string()).collect();
        filter.error_number = Some(libc::EPERM);
        filter
    }

    #[test]
    fn the_same_filter_is_compiled_once() {
        let mut cache = FilterCache::default();

        let first = cache.get(&deny(&["keyctl", "add_key"])).unwrap();
        let second = cache.get(&deny(&["keyctl", "add_key"])).unwrap();

        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(cache.compilations(), 1);
    }

    #[test]
    fn the_same_lists_in_another_order_share_one_entry() {
        let mut cache = FilterCache::default();

        let first = cache.get(&deny(&["keyctl", "add_key"])).unwrap();
        let second = cache.get(&deny(&["add_key", "keyctl", "keyctl"])).unwrap();

        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(cache.compilations(), 1);
    }

    #[test]
    fn a_different_filter_is_compiled_on_its_own() {
        let mut cache = FilterCache::default();

        let first = cache.get(&deny(&["keyctl"])).unwrap();
        let second = cache.get(&deny(&["add_key"])).unwrap();

        assert_ne!(first, second);
        assert_eq!(cache.compilations(), 2);
    }

    #[test]
    fn a_filter_that_does_not_compile_is_not_kept() {
        let mut cache = FilterCache::default();

        assert!(cache.get(&deny(&["not_a_syscall"])).is_err());

        assert!(cache.entries.is_empty());
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity_and_drops_the_least_used() {
        let mut cache = FilterCache::default();
        let names: Vec<&str> = crate::sandbox::seccomp::table::tests_names()
            .take(CAPACITY + 1)
            .collect();
        let first = deny(&[names[0]]);
        cache.get(&first).unwrap();

        for name in &names[1..] {
            // Keeps the first in use, so another is the oldest.
            cache.get(&first).unwrap();
            cache.get(&deny(&[name])).unwrap();
        }

        assert_eq!(cache.entries.len(), CAPACITY);
        assert!(cache.entries.contains_key(&normalized(&first)));
        assert!(!cache.entries.contains_key(&normalized(&deny(&[names[1]]))));
    }
}
