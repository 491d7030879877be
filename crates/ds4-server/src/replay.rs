//! Exact DSML replay: tool-call id → the raw DSML block the model sampled.
//!
//! When a client sends the history back, an assistant message whose call ids all
//! map to the same block is rendered with those exact bytes instead of the
//! canonical DSML, so the prompt is byte-identical to what the live KV holds.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A bounded LRU by id count and by total block bytes (a block shared by several
/// ids is counted once per id, which only makes the byte cap stricter).
pub struct ReplayMap {
    max_ids: usize,
    max_bytes: usize,
    bytes: usize,
    map: HashMap<String, Arc<str>>,
    order: VecDeque<String>,
}

impl ReplayMap {
    pub fn new(max_ids: usize, max_bytes: usize) -> Self {
        Self {
            max_ids,
            max_bytes,
            bytes: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Remember `block` for every id in `ids`.
    pub fn insert_block(&mut self, ids: &[String], block: &str) {
        if self.max_ids == 0 || block.len() > self.max_bytes {
            return;
        }
        let block: Arc<str> = Arc::from(block);
        for id in ids {
            if let Some(old) = self.map.insert(id.clone(), block.clone()) {
                self.bytes -= old.len();
                self.order.retain(|k| k != id);
            }
            self.bytes += block.len();
            self.order.push_back(id.clone());
        }
        while self.map.len() > self.max_ids || self.bytes > self.max_bytes {
            let Some(k) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.map.remove(&k) {
                self.bytes -= old.len();
            }
        }
    }

    /// Every (id, block) whose block occurs in `text`: the part of the map a
    /// saved session with that text needs for exact replay.
    pub fn entries_in(&self, text: &str) -> Vec<(String, String)> {
        let mut seen: HashMap<*const u8, bool> = HashMap::new();
        let mut out = Vec::new();
        for id in &self.order {
            let Some(block) = self.map.get(id) else {
                continue;
            };
            let found = *seen
                .entry(block.as_ptr())
                .or_insert_with(|| text.contains(&**block));
            if found {
                out.push((id.clone(), block.to_string()));
            }
        }
        out
    }

    /// The raw block shared by all `ids`, if every id is known and they agree.
    pub fn block_for(&self, ids: &[&str]) -> Option<Arc<str>> {
        let first = self.map.get(*ids.first()?)?;
        ids.iter()
            .all(|id| self.map.get(*id).is_some_and(|b| Arc::ptr_eq(b, first)))
            .then(|| first.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ids_must_agree_and_lru_evicts_oldest() {
        let mut m = ReplayMap::new(3, 1 << 20);
        m.insert_block(&["a".into(), "b".into()], "BLOCK1");
        m.insert_block(&["c".into()], "BLOCK2");
        assert_eq!(m.block_for(&["a", "b"]).as_deref(), Some("BLOCK1"));
        assert_eq!(m.block_for(&["a", "c"]), None);
        assert_eq!(m.block_for(&["a", "zz"]), None);
        m.insert_block(&["d".into()], "BLOCK3");
        assert_eq!(m.len(), 3);
        assert_eq!(m.block_for(&["a"]), None, "oldest id evicted");
        assert_eq!(m.block_for(&["d"]).as_deref(), Some("BLOCK3"));
        let mut small = ReplayMap::new(100, 10);
        small.insert_block(&["x".into()], "123456");
        small.insert_block(&["y".into()], "123456");
        assert_eq!(small.block_for(&["x"]), None, "byte cap evicts");
        assert!(small.block_for(&["y"]).is_some());
    }

    #[test]
    fn entries_in_text() {
        let mut m = ReplayMap::new(10, 1 << 20);
        m.insert_block(&["a".into(), "b".into()], "<B1>");
        m.insert_block(&["c".into()], "<B2>");
        let e = m.entries_in("x<B1>y");
        assert_eq!(
            e,
            vec![("a".into(), "<B1>".into()), ("b".into(), "<B1>".into())]
        );
        assert!(m.entries_in("nothing").is_empty());
    }
}
