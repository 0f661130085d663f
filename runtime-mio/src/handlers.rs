//! A worker's handler table: looked up by `(namespace, name)` as borrowed
//! strings, without allocating, and callable while the table itself may be
//! changed by the handler it is running.

use mob_app::BuildNameHasher;
use mob_proto::Text;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A map keyed by short names, hashed cheaply. (Only the application adds
/// keys; a peer's names are only looked up, so a keyed hash buys nothing.)
type NameMap<V> = HashMap<String, V, BuildNameHasher>;

/// The last lookup: namespace, name, handler.
type LastHit<H> = (Text, Text, Rc<RefCell<H>>);

/// Handlers of type `H` by namespace, then name.
pub(crate) struct Handlers<H> {
    by_ns: NameMap<NameMap<Rc<RefCell<H>>>>,
    /// The last lookup by interned names: a stream of the same message
    /// finds its handler with two pointer comparisons.
    last: RefCell<Option<LastHit<H>>>,
}

impl<H> Handlers<H> {
    pub(crate) fn new() -> Self {
        Handlers { by_ns: NameMap::default(), last: RefCell::new(None) }
    }

    /// The handler of `name` in `ns` (names as proto hands them over).
    pub(crate) fn get_text(&self, ns: &Text, name: &Text) -> Option<Rc<RefCell<H>>> {
        if let Some((n, m, h)) = &*self.last.borrow()
            && Text::ptr_eq(n, ns)
            && Text::ptr_eq(m, name)
        {
            return Some(h.clone());
        }
        let h = self.get(ns, name)?;
        *self.last.borrow_mut() = Some((ns.clone(), name.clone(), h.clone()));
        Some(h)
    }

    /// Sets (or replaces) the handler of `name` in `ns`.
    pub(crate) fn insert(&mut self, ns: &str, name: &str, handler: H) {
        *self.last.get_mut() = None;
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
