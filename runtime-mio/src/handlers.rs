//! A worker's handler table: looked up by `(namespace, name)` as borrowed
//! strings, without allocating, and callable while the table itself may be
//! changed by the handler it is running.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Handlers of type `H` by namespace, then name.
pub(crate) struct Handlers<H> {
    by_ns: HashMap<String, HashMap<String, Rc<RefCell<H>>>>,
}

impl<H> Handlers<H> {
    pub(crate) fn new() -> Self {
        Handlers { by_ns: HashMap::new() }
    }

    /// Sets (or replaces) the handler of `name` in `ns`.
    pub(crate) fn insert(&mut self, ns: &str, name: &str, handler: H) {
        self.by_ns.entry(ns.to_string()).or_default().insert(name.to_string(), Rc::new(RefCell::new(handler)));
    }

    /// The handler of `name` in `ns`, shared so that it can run while the
    /// table changes.
    pub(crate) fn get(&self, ns: &str, name: &str) -> Option<Rc<RefCell<H>>> {
        self.by_ns.get(ns)?.get(name).cloned()
    }

    /// Whether any handler is registered in `ns`.
    pub(crate) fn has_ns(&self, ns: &str) -> bool {
        self.by_ns.get(ns).is_some_and(|m| !m.is_empty())
    }
}
