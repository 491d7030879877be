//! Byte-pair merges over one pre-token.
//!
//! Semantics are those of HF's `Word::merge_all`: repeatedly apply the adjacent pair with
//! the lowest merge rank, the leftmost one among equal ranks (equal rank means the same
//! pair). Short pieces, by far the most common, use a direct scan; long ones (whitespace
//! runs, long words) a heap so the cost stays O(n log n).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style hasher for the vocabulary maps (token strings and packed id pairs).
/// The keys come from the model file, not from users, so SipHash's resistance to chosen
/// collisions buys nothing; it would cost most of the ~400k lookups made while loading.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = self.0.wrapping_add(v).wrapping_mul(FX_K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the best-mixed bits at the top; hashbrown indexes buckets
        // with the low bits, so rotate them down.
        self.0.rotate_left(26)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
}

pub(crate) type FastBuild = BuildHasherDefault<FastHasher>;

pub(crate) type PairMap = HashMap<u64, Merge, FastBuild>;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Merge {
    pub(crate) rank: u32,
    pub(crate) new_id: u32,
}

#[inline]
pub(crate) fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// Pieces at most this long use the quadratic scan; it beats the heap on short input.
const SCAN_MAX: usize = 48;

pub(crate) struct Bpe {
    pub(crate) merges: PairMap,
    /// Vocabulary id of each byte's single-character token.
    pub(crate) byte_ids: [u32; 256],
}

#[derive(Default)]
pub(crate) struct Scratch {
    syms: Vec<u32>,
    ranks: Vec<u32>,
    nodes: Vec<Node>,
    heap: BinaryHeap<Reverse<(u32, u32, u32)>>,
}

#[derive(Clone, Copy)]
struct Node {
    id: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

const NONE: u32 = u32::MAX;

impl Bpe {
    #[inline]
    fn merge_of(&self, left: u32, right: u32) -> Option<Merge> {
        self.merges.get(&pair_key(left, right)).copied()
    }

    /// Appends the ids of one pre-token (raw bytes) to `out`.
    pub(crate) fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        match piece.len() {
            0 => {}
            1 => out.push(self.byte_ids[piece[0] as usize]),
            n if n <= SCAN_MAX => self.encode_scan(piece, out, scratch),
            _ => self.encode_heap(piece, out, scratch),
        }
    }

    fn encode_scan(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        let syms = &mut scratch.syms;
        let ranks = &mut scratch.ranks;
        syms.clear();
        syms.extend(piece.iter().map(|&b| self.byte_ids[b as usize]));
        // ranks[k] is the rank of the pair (syms[k], syms[k+1]), u32::MAX when none.
        ranks.clear();
        ranks.extend(
            syms.windows(2)
                .map(|w| self.merge_of(w[0], w[1]).map_or(u32::MAX, |m| m.rank)),
        );
        loop {
            let mut best = u32::MAX;
            let mut at = usize::MAX;
            for (k, &r) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = k;
                }
            }
            if at == usize::MAX {
                break;
            }
            let Some(m) = self.merge_of(syms[at], syms[at + 1]) else {
                break;
            };
            syms[at] = m.new_id;
            syms.remove(at + 1);
            ranks.remove(at);
            if at > 0 {
                ranks[at - 1] = self
                    .merge_of(syms[at - 1], syms[at])
                    .map_or(u32::MAX, |m| m.rank);
            }
            if at + 1 < syms.len() {
                ranks[at] = self
                    .merge_of(syms[at], syms[at + 1])
                    .map_or(u32::MAX, |m| m.rank);
            }
        }
        out.extend_from_slice(syms);
    }

    fn encode_heap(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        let nodes = &mut scratch.nodes;
        let heap = &mut scratch.heap;
        nodes.clear();
        heap.clear();
        let n = piece.len() as u32;
        nodes.extend(piece.iter().enumerate().map(|(k, &b)| Node {
            id: self.byte_ids[b as usize],
            prev: if k == 0 { NONE } else { k as u32 - 1 },
            next: if k as u32 + 1 == n {
                NONE
            } else {
                k as u32 + 1
            },
            alive: true,
        }));
        for k in 0..n - 1 {
            if let Some(m) = self.merge_of(nodes[k as usize].id, nodes[k as usize + 1].id) {
                heap.push(Reverse((m.rank, k, m.new_id)));
            }
        }
        // Heap entries go stale when a neighbour merges first; an entry is still valid
        // when its left node is alive, has a right neighbour, and that pair still merges
        // into the same token (spans only grow, so same result means same pair).
        while let Some(Reverse((_, pos, new_id))) = heap.pop() {
            let left = nodes[pos as usize];
            if !left.alive || left.next == NONE {
                continue;
            }
            let right = nodes[left.next as usize];
            match self.merge_of(left.id, right.id) {
                Some(m) if m.new_id == new_id => {}
                _ => continue,
            }
            nodes[pos as usize].id = new_id;
            nodes[pos as usize].next = right.next;
            nodes[left.next as usize].alive = false;
            if right.next != NONE {
                nodes[right.next as usize].prev = pos;
                if let Some(m) = self.merge_of(new_id, nodes[right.next as usize].id) {
                    heap.push(Reverse((m.rank, pos, m.new_id)));
                }
            }
            if left.prev != NONE
                && let Some(m) = self.merge_of(nodes[left.prev as usize].id, new_id)
            {
                heap.push(Reverse((m.rank, left.prev, m.new_id)));
            }
        }
        let mut k = 0u32;
        while k != NONE {
            out.push(nodes[k as usize].id);
            k = nodes[k as usize].next;
        }
    }
}
