//! Classes of work: the rows of the profile table.
//!
//! A [`Class`] is a small integer naming a kind of work (`mm`, `grant_table`, `bridge`, ...). The
//! built-in set mirrors the seed profile; crates may register more at start-up with
//! [`Class::register`]. Indices are dense so per-thread counters can be flat arrays.

use std::fmt;
use std::sync::Mutex;

/// Upper bound on distinct classes (built-in plus registered).
pub const MAX_CLASSES: usize = 64;

/// A class of work that profiling attributes time to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Class(u8);

macro_rules! builtin_classes {
    ($($(#[$doc:meta])* $konst:ident = $idx:literal, $name:literal;)*) => {
        impl Class {
            $($(#[$doc])* pub const $konst: Class = Class($idx);)*
        }
        const BUILTIN: &[&str] = &[$($name),*];
    };
}

builtin_classes! {
    /// Work nobody claimed: time outside any scope.
    OTHER = 0, "other";
    /// Hypervisor memory management: page-table updates, remaps, ownership changes.
    MM = 1, "mm";
    /// Grant-table operations: acquire/release, map/unmap, transfer bookkeeping.
    GRANT_TABLE = 2, "grant_table";
    /// Frame allocator.
    PAGE_ALLOC = 3, "page_alloc";
    /// Event channels: notify, pending, block.
    EVENT_CHANNEL = 4, "event_channel";
    /// Domain lookup by id (the seed's `find_domain_by_id`).
    FIND_DOMAIN = 5, "find_domain";
    /// The L2 switch.
    BRIDGE = 6, "bridge";
    /// The driver-domain backend.
    NETBACK = 7, "netback";
    /// The guest frontend.
    NETFRONT = 8, "netfront";
    /// Shared-ring index work.
    RING = 9, "ring";
    /// The TCP/IP stack.
    TCP = 10, "tcp";
    /// Bytes moved between frames.
    COPY = 11, "copy";
}

/// Number of built-in classes.
pub const BUILTIN_CLASSES: usize = BUILTIN.len();

static REGISTERED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// Why a class could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// All [`MAX_CLASSES`] slots are taken.
    #[error(
        "cannot register profiling class {name:?}: all {MAX_CLASSES} class slots are in use; \
         reuse an existing class or raise xenoprof::MAX_CLASSES"
    )]
    Full {
        /// The name that did not fit.
        name: &'static str,
    },
}

impl Class {
    /// Registers (or finds) a class by name. Registering the same name twice returns the same
    /// class, so crates may call this from several places. Not for the hot path: call it once and
    /// keep the `Class`.
    pub fn register(name: &'static str) -> Result<Class, RegisterError> {
        if let Some(i) = BUILTIN.iter().position(|b| *b == name) {
            return Ok(Class(i as u8));
        }
        let mut reg = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = reg.iter().position(|b| *b == name) {
            return Ok(Class((BUILTIN_CLASSES + i) as u8));
        }
        if BUILTIN_CLASSES + reg.len() >= MAX_CLASSES {
            return Err(RegisterError::Full { name });
        }
        reg.push(name);
        Ok(Class((BUILTIN_CLASSES + reg.len() - 1) as u8))
    }

    /// Looks a class up by name without registering it.
    pub fn by_name(name: &str) -> Option<Class> {
        if let Some(i) = BUILTIN.iter().position(|b| *b == name) {
            return Some(Class(i as u8));
        }
        let reg = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        reg.iter()
            .position(|b| *b == name)
            .map(|i| Class((BUILTIN_CLASSES + i) as u8))
    }

    /// Dense index, `0..MAX_CLASSES`.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The class with dense index `i`, if one exists.
    pub fn from_index(i: usize) -> Option<Class> {
        (i < BUILTIN_CLASSES + REGISTERED.lock().unwrap_or_else(|e| e.into_inner()).len())
            .then_some(Class(i as u8))
    }

    /// The class's name as it appears in reports.
    pub fn name(self) -> &'static str {
        let i = self.index();
        if i < BUILTIN_CLASSES {
            return BUILTIN[i];
        }
        REGISTERED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(i - BUILTIN_CLASSES)
            .copied()
            .unwrap_or("unregistered")
    }

    /// Every class known now, built-in first.
    pub fn all() -> Vec<Class> {
        let n = BUILTIN_CLASSES + REGISTERED.lock().unwrap_or_else(|e| e.into_inner()).len();
        (0..n).map(|i| Class(i as u8)).collect()
    }
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Class({})", self.name())
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_round_trip() {
        for c in Class::all().into_iter().take(BUILTIN_CLASSES) {
            assert_eq!(Class::by_name(c.name()), Some(c));
        }
        assert_eq!(Class::MM.name(), "mm");
        assert_eq!(Class::GRANT_TABLE.name(), "grant_table");
    }

    #[test]
    fn register_is_idempotent_and_extends() {
        let a = Class::register("test_extra_class").unwrap();
        let b = Class::register("test_extra_class").unwrap();
        assert_eq!(a, b);
        assert!(a.index() >= BUILTIN_CLASSES);
        assert_eq!(a.name(), "test_extra_class");
        assert_eq!(Class::register("bridge").unwrap(), Class::BRIDGE);
    }
}
